"""The detection task: SSDLite model, COCO-style input pipeline with anchor targets, loss, mAP.

Anchor matching runs in the input pipeline (parallel, on the host), so the train step only runs
the network and the loss.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from ondevice_vision.data import detection_augment
from ondevice_vision.data.detection_sources import load_detection_source
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import drawing
from ondevice_vision.heads import losses, postprocess, ssdlite, target_assigner

NAME = "detection"
LOSS_KEYS = ("cls_loss", "box_loss")


def build_model(config):
    return ssdlite.build_detector(config.model)


def anchors(config, input_size=None):
    return ssdlite.anchor_boxes(config.model, input_size or config.model.input_size)


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
        names = tuple(by_id.get(i + 1, f"unused_{i + 1}") for i in range(size))
        return LabelMap(names=names, dataset_ids=tuple(range(1, size + 1)))
    if config.data.class_index != "contiguous":
        raise ValueError(
            f"data.class_index must be 'contiguous' or 'category_id', got {config.data.class_index!r}"
        )
    if source_map.num_classes > config.model.num_classes:
        raise ValueError(
            f"the data has {source_map.num_classes} classes ({', '.join(source_map.names[:5])}, "
            f"...) but model.num_classes is {config.model.num_classes}"
        )
    return source_map


def _class_remap(config, source_map: LabelMap):
    if config.data.class_index == "category_id":
        return tf.constant([d - 1 for d in source_map.dataset_ids], tf.int32)
    return None


def _pad(tensor, size, value):
    tensor = tensor[:size]
    pad = size - tf.shape(tensor)[0]
    paddings = [[0, pad]] + [[0, 0]] * (len(tensor.shape) - 1)
    return tf.pad(tensor, paddings, constant_values=value)


def parse_example(example, config, anchor_boxes, remap, training: bool):
    """Decoded example -> (image float32 [H, W, 3] in 0..255, labels dict)."""
    image = example["image"]
    boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
    classes = tf.cast(example["classes"], tf.int32)
    if remap is not None:
        classes = tf.gather(remap, classes)
    is_crowd = tf.cast(example["is_crowd"], tf.bool)
    original_size = tf.shape(image)[:2]
    if training and config.data.augment:
        image, boxes, classes, is_crowd = detection_augment.ssd_random_crop(
            image, boxes, classes, is_crowd
        )
        image, boxes = detection_augment.random_horizontal_flip(image, boxes)
    image = detection_augment.resize_image(image, tuple(config.model.input_size))
    m = config.model
    targets = target_assigner.assign_targets(
        boxes,
        classes,
        is_crowd,
        anchor_boxes,
        num_classes=m.num_classes,
        matched_threshold=m.matched_threshold,
        unmatched_threshold=m.unmatched_threshold,
        force_match_for_each_row=m.force_match,
        scale_factors=tuple(m.box_scale_factors),
    )
    max_boxes = config.data.max_boxes
    labels = dict(targets)
    labels["image_id"] = tf.cast(example["image_id"], tf.int64)
    labels["image_info"] = tf.cast(original_size, tf.int32)
    labels["gt_boxes"] = _pad(boxes, max_boxes, 0.0)
    labels["gt_classes"] = _pad(classes, max_boxes, -1)
    labels["gt_is_crowd"] = _pad(is_crowd, max_boxes, False)
    return image, labels


def build_dataset(config, split: str, batch_size: int, input_context=None, repeat=None):
    """Batched (images, labels) of `split` and the model's LabelMap."""
    training = split == "train"
    source, source_map = load_detection_source(config.data, split)
    label_map = model_label_map(config, source_map)
    if input_context is not None and input_context.num_input_pipelines > 1:
        source = source.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        source = source.shuffle(config.train.shuffle_buffer, seed=config.train.seed)
    if repeat if repeat is not None else training:
        source = source.repeat()
    elif config.eval.max_images:
        source = source.take(config.eval.max_images)
    parse = functools.partial(
        parse_example,
        config=config,
        anchor_boxes=tf.constant(anchors(config)),
        remap=_class_remap(config, source_map),
        training=training,
    )
    ds = source.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE), label_map


def compute_losses(config, outputs, labels) -> tuple[dict, tf.Tensor]:
    """Per-image loss sums [B] and the per-image normaliser [B] (number of positive anchors).

    The loop divides the summed losses by the normaliser summed over the global batch, which is
    the OD API's normalisation by the number of matches, correct for any replica count.
    """
    m = config.model
    per_image = losses.detection_loss(
        outputs["box_outputs"],
        outputs["class_outputs"],
        labels,
        num_classes=m.num_classes,
        alpha=m.focal_alpha,
        gamma=m.focal_gamma,
        delta=m.huber_delta,
        cls_weight=m.cls_weight,
        box_weight=m.box_weight,
        encode_background_as_zeros=m.encode_background_as_zeros,
        normalize_box_loss_by_codesize=m.normalize_box_loss_by_codesize,
    )
    # detection_loss divides each image by max(1, its positives): undo it to get plain sums.
    per_image_norm = tf.maximum(tf.cast(labels["num_positives"], tf.float32), 1.0)
    sums = {k: per_image[k] * per_image_norm for k in LOSS_KEYS}
    return sums, tf.cast(labels["num_positives"], tf.float32)


def predict(config, model, images):
    outputs = model(images, training=False)
    m = config.model
    input_size = tuple(int(s) for s in images.shape[1:3]) if images.shape[1] else None
    return postprocess.postprocess(
        outputs["box_outputs"],
        outputs["class_outputs"],
        tf.constant(anchors(config, input_size)),
        score_threshold=m.score_threshold,
        iou_threshold=m.iou_threshold,
        max_detections_per_class=m.max_detections_per_class,
        max_total_detections=m.max_detections,
        scale_factors=tuple(m.box_scale_factors),
    )


class Evaluator:
    """COCO mAP over the eval split (official annotation file when configured)."""

    def __init__(self, config, label_map: LabelMap):
        from ondevice_vision.eval.coco_evaluator import CocoEvaluator

        self.config = config
        self.coco = CocoEvaluator(label_map, annotation_file=config.eval.get("annotation_file"))

    def update(self, predictions: dict, labels: dict) -> None:
        self.coco.update(predictions, labels)

    def result(self) -> dict:
        return self.coco.evaluate()

    def write(self, directory: str) -> None:
        import os

        if self.config.eval.get("write_detections", True):
            self.coco.write_detections(os.path.join(directory, "detections.json"))


def make_evaluator(config, label_map: LabelMap) -> Evaluator:
    return Evaluator(config, label_map)


def visualize(config, images, predictions, labels, label_map: LabelMap) -> np.ndarray:
    """Predicted boxes drawn on the (resized) eval images, as one grid image."""
    pictures = []
    for i in range(len(images)):
        n = int(predictions["num_detections"][i])
        pictures.append(
            drawing.draw_detections(
                np.clip(images[i], 0, 255).astype(np.uint8),
                predictions["detection_boxes"][i][:n],
                predictions["detection_classes"][i][:n],
                predictions["detection_scores"][i][:n],
                class_names=label_map.names,
                score_threshold=0.3,
            )
        )
    return drawing.image_grid(pictures, cols=min(4, len(pictures)))


HEADLINE_METRIC = "AP"
