"""The segmentation task: LR-ASPP model, crop/scale/flip input pipeline, softmax cross-entropy.

Training reads random crops; evaluation reads whole images at full resolution (padded to share a
batch; padding carries the ignore label).
"""

from __future__ import annotations

import copy
import functools
import os
import re

import numpy as np
import tensorflow as tf

from ondevice_vision import drawing
from ondevice_vision.data import cityscapes_labels, segmentation_augment
from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap
from ondevice_vision.data.pipeline import prepare_task_source
from ondevice_vision.data.segmentation_sources import load_segmentation_source, source_label_map
from ondevice_vision.models.lraspp import Segmenter
from ondevice_vision.tasks import segmentation_inference, segmentation_loss
from ondevice_vision.tasks.task import task_of_module

CITYSCAPES_SOURCES = ("tfds", "cityscapes_folder")


def build_model(config):
    m = config.model
    return Segmenter(
        backbone=m.backbone,
        num_classes=m.num_classes,
        depth_multiplier=m.depth_multiplier,
        reduced_tail=m.reduced_tail,
        output_stride=m.output_stride,
        head_filters=m.head_filters,
        attention_pooling=m.attention_pooling,
        crop_size=tuple(config.data.crop_size),
        bn_momentum=m.bn_momentum,
        lraspp_variant=m.get("lraspp_variant", "paper"),
    )


def model_for_eval(config, model):
    """The trained model at `eval.output_stride` (0: as trained): the same weights in a network
    dilated to that output stride, as DeepLab's eval `--output_stride` (docs/segmentation.md).

    A network with another output stride has the same layers and weights but not the same layer
    list (the padding layers of strided convolutions differ), so the weights are copied by layer
    name rather than restored from the checkpoint."""
    output_stride = int(config.get("eval", {}).get("output_stride", 0) or 0)
    if not output_stride or output_stride == config.model.output_stride:
        return model
    other = copy.deepcopy(config)
    other.model.output_stride = output_stride
    dilated = build_model(other)
    for source, target in ((model.backbone, dilated.backbone), (model, dilated)):
        weighted = {layer.name: layer for layer in source.layers if layer.weights}
        for layer in target.layers:
            if layer.weights and layer.name != "backbone":
                layer.set_weights(weighted[layer.name].get_weights())
    return dilated


def palette(config, num_classes: int) -> np.ndarray:
    if config.data.source in CITYSCAPES_SOURCES:
        return np.asarray(cityscapes_labels.PALETTE, np.uint8)
    return drawing.default_palette(num_classes)


def _check_classes(config, label_map: LabelMap):
    if label_map.num_classes != config.model.num_classes:
        raise ValueError(
            f"the data has {label_map.num_classes} classes ({', '.join(label_map.names[:5])}, ...) "
            f"but model.num_classes is {config.model.num_classes}"
        )


def label_map(config) -> LabelMap:
    """The model's LabelMap from the config alone (no image is read; Cityscapes' is shipped)."""
    result = source_label_map(config.data)
    _check_classes(config, result)
    return result


def _train_example(example, config):
    d = config.data
    image, mask = segmentation_augment.preprocess_train(
        example,
        crop_size=tuple(d.crop_size),
        min_scale=d.min_scale,
        max_scale=d.max_scale,
        ignore_label=IGNORE_LABEL,
        flip=d.get("random_flip", True),
    )
    return image, {"mask": mask}


def _eval_example(example):
    image, mask = segmentation_augment.preprocess_eval(example)
    size = tf.shape(image)[:2]
    return image, {"mask": mask, "image_size": size, "image_id": example["image_id"]}


# Resolved config.loss.class_weights per data config: "inverse_frequency" reads every training
# mask, so it is computed once per process.
_CLASS_WEIGHTS: dict[str, list | None] = {}


def _weights_key(config) -> str:
    return f"{config.data.to_json()}|{config.loss.class_weights}|{config.model.num_classes}"


def class_weights(config, source=None, label_map: LabelMap | None = None):
    """config.loss.class_weights as a list (None: every class 1); inverse frequency from `source`
    (the training source: decoded examples with "mask"), computed and logged once."""
    loss = config.get("loss")
    if loss is None:
        return None
    key = _weights_key(config)
    if key in _CLASS_WEIGHTS:
        return _CLASS_WEIGHTS[key]
    weights = segmentation_loss.parse_class_weights(loss.class_weights, config.model.num_classes)
    counts = None
    if weights == segmentation_loss.INVERSE_FREQUENCY:
        if source is None:
            with tf.init_scope():
                source, label_map = load_segmentation_source(config.data, "train")
        counts = segmentation_loss.class_pixel_counts(
            (ex["mask"] for ex in source.as_numpy_iterator()), config.model.num_classes
        )
        weights = segmentation_loss.inverse_frequency_weights(counts)
    if weights is not None:
        names = label_map.names if label_map else [str(i) for i in range(len(weights))]
        segmentation_loss.log_class_weights(weights, names, counts)
    _CLASS_WEIGHTS[key] = weights
    return weights


def source_images(config, split: str) -> tf.data.Dataset:
    """The split's images as decoded, uint8 [H, W, 3], in order (int8 calibration)."""
    source, _ = load_segmentation_source(config.data, split)
    return source.map(lambda example: example["image"])


def build_dataset(config, split: str, batch_size: int, input_context=None, repeat=None):
    """Batched (images, labels) of `split` and the LabelMap (train ids -> dataset ids)."""
    training = split == "train"
    source, label_map = load_segmentation_source(config.data, split)
    _check_classes(config, label_map)
    if training:
        class_weights(config, source, label_map)
    source = prepare_task_source(source, config, split, input_context, repeat)
    if training:
        # No autograph (as in tasks/detection.py): the crop branches with tf.cond already.
        ds = source.map(
            tf.autograph.experimental.do_not_convert(
                functools.partial(_train_example, config=config)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=config.train.ordered_input,
        )
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = source.map(
            tf.autograph.experimental.do_not_convert(_eval_example),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        # Full-resolution images of different sizes share a batch by padding; padded pixels
        # carry the ignore label and never reach the metrics.
        ds = ds.padded_batch(
            batch_size,
            padding_values=(
                0.0,
                {
                    "mask": tf.constant(IGNORE_LABEL, tf.uint8),
                    "image_size": 0,
                    "image_id": "",
                },
            ),
        )
    return ds.prefetch(tf.data.AUTOTUNE), label_map


def compute_losses(config, outputs, labels) -> tuple[dict, tf.Tensor]:
    """Per-image summed (weighted) softmax cross-entropy and the labelled pixel count.

    The loop divides by the labelled pixels of the whole global batch (DeepLab's normalisation);
    config.loss adds class weights and top-k pixel mining (tasks/segmentation_loss.py).
    """
    loss = config.get("loss")
    top_k = segmentation_loss.check_top_k(loss.top_k_percent_pixels) if loss else 1.0
    sums, normalizer = segmentation_loss.pixel_cross_entropy(
        outputs, labels["mask"], class_weights(config), top_k
    )
    return {"ce_loss": sums}, normalizer


def predict(config, model, images):
    """Argmax map and probabilities; config.eval's scales / flip / window when set
    (tasks/segmentation_inference.py)."""
    options = segmentation_inference.eval_options(config)
    if segmentation_inference.is_plain(options):
        probabilities = tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))
    else:
        probabilities = segmentation_inference.class_probabilities(model, images, **options)
    return {
        "semantic_map": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
        "probabilities": probabilities,
    }


def truth_and_prediction(config, image, prediction, truth, label_map: LabelMap) -> np.ndarray:
    """One image: the prediction blended over it (left) and the ground truth (right), the longer
    side at most 320 pixels."""
    colours = palette(config, label_map.num_classes)
    image = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    step = max(1, -(-max(image.shape[:2]) // 320))
    image, prediction, truth = (
        image[::step, ::step],
        prediction[::step, ::step],
        truth[::step, ::step],
    )
    pictures = [
        drawing.blend_mask(image, prediction, colours, ignore_label=IGNORE_LABEL),
        drawing.colorize_mask(truth, colours, ignore_label=IGNORE_LABEL),
    ]
    return drawing.image_grid(pictures, cols=2, pad=4, pad_value=255)


def visualize(config, images, predictions, labels, label_map: LabelMap) -> np.ndarray:
    """Colour-coded predictions blended over the images, next to the ground truth."""
    colours = palette(config, label_map.num_classes)
    pictures = []
    for i in range(len(images)):
        h, w = (int(v) for v in labels["image_size"][i])
        image = np.clip(images[i][:h, :w], 0, 255).astype(np.uint8)
        pred = predictions["semantic_map"][i][:h, :w]
        truth = labels["mask"][i][:h, :w, 0]
        pictures.append(drawing.blend_mask(image, pred, colours, ignore_label=IGNORE_LABEL))
        pictures.append(drawing.colorize_mask(truth, colours, ignore_label=IGNORE_LABEL))
    return drawing.image_grid(pictures, cols=2)


def write_prediction(
    exported, outputs: dict, image: np.ndarray, output_dir, name, score_threshold=0.3, alpha=0.5
):
    """ondevice-predict's record of one image (the fraction of pixels per class; the class-index
    mask written as OUTPUT/NAME.mask.png) and its picture (class colours blended over it)."""
    del score_threshold
    mask_path = os.path.join(output_dir, f"{name}.mask.png")
    semantic = outputs["semantic_map"][0].astype(np.int64)
    names = exported.label_map.names
    colours = (
        np.asarray(exported.info.palette, np.uint8)
        if exported.info.palette is not None
        else drawing.default_palette(len(names))
    )
    counts = np.bincount(semantic.ravel(), minlength=len(names))
    fractions = {names[k]: round(float(c) / semantic.size, 5) for k, c in enumerate(counts) if c}
    if len(names) <= 256:
        drawing.save_png(semantic.astype(np.uint8), mask_path)
    picture = drawing.blend_mask(image, semantic, colours, alpha=alpha)
    return {"class_fractions": fractions, "mask": os.path.basename(mask_path)}, picture


TASK = task_of_module(
    __name__,
    name="segmentation",
    class_layers=re.compile(r"_(high|low)_logits$"),
    mediapipe_usage=(
        "import mediapipe as mp\n"
        "segmenter = mp.tasks.vision.ImageSegmenter.create_from_options("
        "mp.tasks.vision.ImageSegmenterOptions(base_options=mp.tasks.BaseOptions("
        'model_asset_path="{model}"), output_category_mask=True))\n'
        'mask = segmenter.segment(mp.Image.create_from_file("{image}")).category_mask\n'
    ),
    evaluator="ondevice_vision.eval.segmentation:SegmentationEvaluator",
    export="ondevice_vision.export.segmentation:SegmentationExport",
    best_metric="mIoU",
    headline_metrics=("mIoU",),
)
