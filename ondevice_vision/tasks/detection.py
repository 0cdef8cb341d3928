"""The detection task: SSDLite model, COCO-style input pipeline with anchor targets, losses.

Anchor matching (`data.anchor_matching`) runs in the loss by default, on the accelerator, as the
Object Detection API's SSD loss does, so the host only decodes and augments; or in the input
pipeline, once per batch. Image files are decoded after shuffling, a JPEG only inside its SSD
crop window (docs/speed.md says what each step of the pipeline costs).
"""

from __future__ import annotations

import functools
import re
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from ondevice_vision import drawing
from ondevice_vision.data import detection_augment
from ondevice_vision.data.detection_sources import load_detection_source, source_label_map
from ondevice_vision.data.image_decode import (
    apply_orientation,
    decode_rgb,
    decoded_or_placeholder,
    example_name,
    map_skipping_undecodable,
    resize_pixels,
)
from ondevice_vision.data.label_map import LabelMap, unused_name
from ondevice_vision.data.pipeline import prepare_task_source
from ondevice_vision.heads import anchors as anchors_lib
from ondevice_vision.heads import losses, target_assigner
from ondevice_vision.models import ssdlite
from ondevice_vision.tasks.task import task_of_module

LOSS_KEYS = ("cls_loss", "box_loss")


def build_model(config) -> ssdlite.SSDLiteDetector:
    return ssdlite.build_detector(config.model)


def _anchors(config) -> tf.Tensor:
    """The anchors of the config's detector at model.input_size, without building the model (the
    input pipeline matches on the host)."""
    m = config.model
    return tf.constant(anchors_lib.anchor_boxes(m.anchors, 2 + len(m.extra_depths), m.input_size))


def palette(config, num_classes: int) -> None:
    """Detection exports carry no class colours (pictures colour boxes by class index)."""
    del config, num_classes


def model_label_map(config, source_map: LabelMap) -> LabelMap:
    """The label map of the model's class indices (the OD API's 90 COCO slots, or the source's)."""
    if config.data.class_index == "category_id":
        by_id = dict(zip(source_map.dataset_ids, source_map.names, strict=True))
        size = config.model.num_classes
        if max(by_id) > size:
            raise ValueError(
                f"data.class_index='category_id' needs model.num_classes >= {max(by_id)}, "
                f"got {size}"
            )
        names = tuple(by_id.get(i + 1, unused_name(i + 1)) for i in range(size))
        return LabelMap(names=names, dataset_ids=tuple(range(1, size + 1)))
    if source_map.num_classes > config.model.num_classes:
        raise ValueError(
            f"the data has {source_map.num_classes} classes ({', '.join(source_map.names[:5])}, "
            f"...) but model.num_classes is {config.model.num_classes}"
        )
    return source_map


def label_map(config) -> LabelMap:
    """The model's LabelMap from the config alone (no image is read; COCO's is shipped)."""
    return model_label_map(config, source_label_map(config.data))


def _class_remap(config, source_map: LabelMap):
    if config.data.class_index == "category_id":
        return tf.constant([d - 1 for d in source_map.dataset_ids], tf.int32)
    return None


def _pad(tensor, size, value):
    tensor = tensor[:size]
    pad = size - tf.shape(tensor)[0]
    paddings = [[0, pad]] + [[0, 0]] * (len(tensor.shape) - 1)
    return tf.pad(tensor, paddings, constant_values=value)


def parse_example(example, config, remap, training: bool, skip_undecodable: bool = False):
    """Decoded or encoded example -> (image float32 [H, W, 3] in 0..255, labels without targets).

    The crop is drawn from the image's shape and applied while decoding; the flip comes after the
    resize (the same pixels, as bilinear resizing is mirror-symmetric, on fewer of them).
    `skip_undecodable`: returns ((image, labels), decoded): only the decode runs under the
    per-file guard (`image_decode.decoded_or_placeholder`), for `map_skipping_undecodable`'s
    `reports_failure`.
    """
    boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
    classes = tf.cast(example["classes"], tf.int32)
    if remap is not None:
        classes = tf.gather(remap, classes)
    is_crowd = tf.cast(example["is_crowd"], tf.bool)
    augment = training and config.data.augment
    decoded = tf.constant(True)
    if "encoded_image" in example and augment:
        cropped = detection_augment.ssd_random_crop_encoded(
            example["encoded_image"],
            boxes,
            classes,
            is_crowd,
            example.get("orientation", 1),
            skip_undecodable=skip_undecodable,
        )
        image, boxes, classes, is_crowd, original_size = cropped[:5]
        decoded = cropped[5] if skip_undecodable else decoded
    else:
        if "image" in example:
            image = example["image"]
        elif skip_undecodable:
            image, decoded = decoded_or_placeholder(decode_rgb, example["encoded_image"])
            image = apply_orientation(image, example.get("orientation", 1))
        else:
            image = _decode(example)["image"]
        original_size = tf.shape(image)[:2]
        if augment:
            image, boxes, classes, is_crowd = detection_augment.ssd_random_crop(
                image, boxes, classes, is_crowd
            )
    image = resize_pixels(image, config.model.input_size)
    if augment:
        image, boxes = detection_augment.random_horizontal_flip(image, boxes)
    labels = {
        "image_id": tf.cast(example["image_id"], tf.int64),
        "image_info": tf.cast(original_size, tf.int32),
    }
    max_boxes = config.data.max_boxes
    if not training:
        # Evaluation scores every box: padded to data.max_boxes (one shape for most batches),
        # never cut; a batch holding a more crowded image is padded to that image's count.
        room = tf.maximum(max_boxes, tf.shape(boxes)[0])
        labels.update(
            gt_boxes=_pad(boxes, room, 0.0),
            gt_classes=_pad(classes, room, -1),
            gt_is_crowd=_pad(is_crowd, room, False),
        )
    else:
        _warn_if_cut(tf.shape(boxes)[0], max_boxes, example_name(example))
        labels.update(
            gt_boxes=_pad(boxes, max_boxes, 0.0),
            gt_classes=_pad(classes, max_boxes, -1),
            gt_is_crowd=_pad(is_crowd, max_boxes, False),
        )
    return ((image, labels), decoded) if skip_undecodable else (image, labels)


def _warn_if_cut(num_boxes, max_boxes: int, name) -> None:
    """Training matches the first data.max_boxes boxes of an image: name each image cut."""

    def warn():
        message = tf.strings.join(
            [
                "WARNING: training uses the first ",
                str(max_boxes),
                " of the ",
                tf.strings.as_string(num_boxes),
                " boxes of ",
                name,
                " (data.max_boxes)",
            ]
        )
        tf.print(message, output_stream=sys.stderr)
        return tf.constant(True)

    tf.cond(num_boxes > max_boxes, warn, lambda: tf.constant(True))


def add_targets(images, labels, config, anchor_boxes):
    """Anchor targets of a whole batch at once (see target_assigner.assign_targets_batch).

    Matching sees the first data.max_boxes boxes of an image (100; COCO's most crowded image
    has fewer), the boxes that `gt_boxes` holds.
    """
    m = config.model
    targets = target_assigner.assign_targets_batch(
        labels["gt_boxes"],
        labels["gt_classes"],
        labels["gt_is_crowd"],
        anchor_boxes,
        num_classes=m.num_classes,
        matched_threshold=m.matcher.matched_threshold,
        unmatched_threshold=m.matcher.unmatched_threshold,
        force_match_for_each_row=m.matcher.force_match,
        scale_factors=tuple(m.anchors.box_scale_factors),
        crowd_matches=m.matcher.get("crowd_matches", "ignore"),
    )
    return images, {**targets, **labels}


def _decode(example):
    if "encoded_image" not in example:
        return example
    example = dict(example)
    image = decode_rgb(example.pop("encoded_image"))
    example["image"] = apply_orientation(image, example.pop("orientation", 1))
    return example


def source_images(config, split: str) -> tf.data.Dataset:
    """The split's images as decoded, uint8 [H, W, 3], upright, in order (int8 calibration)."""
    source, _ = load_detection_source(config.data, split)
    return source.map(lambda example: _decode(example)["image"])


def build_dataset(config, split: str, batch_size: int, input_context=None, repeat=None):
    """Batched (images, labels) of `split` and the model's LabelMap."""
    training = split == "train"
    source, source_map = load_detection_source(config.data, split, encoded=True)
    label_map = model_label_map(config, source_map)
    source = prepare_task_source(source, config, split, input_context, repeat, decode=_decode)
    # No autograph: these functions branch with tf.cond already, and converting their source
    # (the SSD crop, the matching) cost more CPU than the rest of a short run's start-up.
    parse = functools.partial(
        parse_example, config=config, remap=_class_remap(config, source_map), training=training
    )
    ordered = not training or config.train.ordered_input
    options = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": ordered}
    if "encoded_image" in source.element_spec:
        # Decoding happens in `parse` (only the crop window of a JPEG when augmenting): a file
        # the decoder refuses there is skipped and named instead of ending the run. Only the
        # decode runs under the guard, which costs per op guarded (docs/speed.md).
        ds = map_skipping_undecodable(
            source,
            tf.autograph.experimental.do_not_convert(
                functools.partial(parse, skip_undecodable=True)
            ),
            example_name,
            f"{split} images",
            reports_failure=True,
            **options,
        )
    else:  # decoded in memory (shapes), or by the decoded cache's guarded decode
        ds = source.map(tf.autograph.experimental.do_not_convert(parse), **options)
    if training:
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = ds.padded_batch(batch_size, padding_values=(0.0, _LABEL_PADDING))
    if not (training and _matches_in_train_step(config)):
        targets = functools.partial(add_targets, config=config, anchor_boxes=_anchors(config))
        ds = ds.map(
            tf.autograph.experimental.do_not_convert(targets),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=ordered,
        )
    return ds.prefetch(tf.data.AUTOTUNE), label_map


_LABEL_PADDING = {
    "image_id": tf.constant(0, tf.int64),
    "image_info": 0,
    "gt_boxes": 0.0,
    "gt_classes": -1,
    "gt_is_crowd": False,
}


def _matches_in_train_step(config) -> bool:
    return config.data.anchor_matching == "train_step"


def compute_losses(config, outputs, labels) -> tuple[dict, tf.Tensor]:
    """Per-image loss sums [B] and the per-image normaliser [B] (number of positive anchors).

    Labels without anchor targets (data.anchor_matching="train_step") are matched here first.

    The trainer divides the summed losses by the normaliser summed over the global batch, which
    is the OD API's normalisation by the number of matches, correct for any replica count.
    """
    m = config.model
    if "cls_targets" not in labels:  # data.anchor_matching="train_step": match here
        _, labels = add_targets(None, labels, config, _anchors(config))
    sums = losses.detection_loss(
        outputs["box_outputs"],
        outputs["class_outputs"],
        labels,
        num_classes=m.num_classes,
        alpha=m.loss.focal_alpha,
        gamma=m.loss.focal_gamma,
        delta=m.loss.huber_delta,
        cls_weight=m.loss.cls_weight,
        box_weight=m.loss.box_weight,
        encode_background_as_zeros=m.loss.encode_background_as_zeros,
        normalize_box_loss_by_codesize=m.loss.normalize_box_loss_by_codesize,
    )
    return {k: sums[k] for k in LOSS_KEYS}, tf.cast(labels["num_positives"], tf.float32)


def predict(config, model, images):
    """Float images [B, H, W, 3] at the model input size -> detections (model class indices)."""
    del config
    input_size = tuple(int(s) for s in images.shape[1:3])
    return model.detect(model(images, training=False), input_size)


TRUTH_COLOUR = (0, 200, 0)


def truth_and_predictions(
    image, image_size, prediction: dict, labels: dict, label_map: LabelMap, score_threshold=0.3
) -> np.ndarray:
    """One eval image at its own aspect ratio (the network input resized back to the original
    height:width, longer side 320): ground truth in green on the left, the detections scoring
    >= score_threshold in class colours on the right."""
    height, width = (int(v) for v in image_size)
    scale = 320 / max(height, width, 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
    keep = np.asarray(labels["gt_classes"]) >= 0
    gt_classes = np.asarray(labels["gt_classes"])[keep]
    truth = drawing.draw_detections(
        pixels,
        np.asarray(labels["gt_boxes"])[keep],
        gt_classes,
        np.ones(len(gt_classes)),
        class_names=label_map.names,
        score_threshold=0.0,
        show_scores=False,
        palette=np.tile(np.asarray(TRUTH_COLOUR, np.uint8), (label_map.num_classes, 1)),
    )
    n = int(prediction["num_detections"])
    predicted = drawing.draw_detections(
        pixels,
        prediction["detection_boxes"][:n],
        prediction["detection_classes"][:n],
        prediction["detection_scores"][:n],
        class_names=label_map.names,
        score_threshold=score_threshold,
    )
    return drawing.image_grid([truth, predicted], cols=2, pad=4, pad_value=255)


def visualize(config, images, predictions, labels, label_map: LabelMap) -> np.ndarray:
    """Ground truth (green, left) and detections (right) on the first eval images, each at its
    own aspect ratio, as one grid image."""
    pictures = []
    for i in range(len(images)):
        pictures.append(
            truth_and_predictions(
                images[i],
                labels["image_info"][i][:2],
                {k: v[i] for k, v in predictions.items()},
                {k: v[i] for k, v in labels.items()},
                label_map,
                config.eval.score_threshold,
            )
        )
    return drawing.image_grid(pictures, cols=min(2, len(pictures)), pad=6, pad_value=255)


def write_prediction(
    exported, outputs: dict, image: np.ndarray, output_dir, name, score_threshold=0.3, alpha=0.5
):
    """ondevice-predict's record of one image (the detections at or above `score_threshold`, as
    dataset ids and names, normalised and pixel boxes) and its picture (the boxes drawn)."""
    del output_dir, name, alpha
    index_of = exported.label_map.index_of_dataset_id()
    height, width = image.shape[:2]
    n = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0][:n]
    ids = outputs["detection_classes"][0][:n]
    scores = outputs["detection_scores"][0][:n]
    keep = scores >= score_threshold
    indices = np.asarray([index_of[int(i)] for i in ids], np.int64)
    detections = [
        {
            "class_id": int(ids[i]),
            "class_name": exported.label_map.names[indices[i]],
            "score": round(float(scores[i]), 5),
            "box": [round(float(v), 5) for v in boxes[i]],
            "box_pixels": [
                round(float(boxes[i][0] * height), 1),
                round(float(boxes[i][1] * width), 1),
                round(float(boxes[i][2] * height), 1),
                round(float(boxes[i][3] * width), 1),
            ],
        }
        for i in np.flatnonzero(keep)
    ]
    picture = drawing.draw_detections(
        image,
        boxes[keep],
        indices[keep],
        scores[keep],
        class_names=exported.label_map.names,
        score_threshold=score_threshold,
    )
    return {"detections": detections}, picture


TASK = task_of_module(
    __name__,
    name="detection",
    class_layers=re.compile(r"^class_predictor_\d+_conv$"),
    mediapipe_usage=(
        "import mediapipe as mp\n"
        'detector = mp.tasks.vision.ObjectDetector.create_from_model_path("{model}")\n'
        'detections = detector.detect(mp.Image.create_from_file("{image}")).detections\n'
    ),
    evaluator="ondevice_vision.eval.detection:DetectionEvaluator",
    export="ondevice_vision.export.detection:DetectionExport",
    best_metric="AP",
    headline_metrics=("AP", "AP50"),
)
