"""The segmentation task: LR-ASPP model, crop/scale/flip input pipeline, softmax cross-entropy.

Training reads random crops; evaluation reads whole images at full resolution (padded to share a
batch; padding carries the ignore label).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from ondevice_vision import drawing
from ondevice_vision.data import cityscapes_labels, segmentation_augment
from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap
from ondevice_vision.data.pipeline import prepare_task_source
from ondevice_vision.data.segmentation_sources import load_segmentation_source
from ondevice_vision.lr_aspp.segmenter import build_segmenter

CITYSCAPES_SOURCES = ("tfds", "cityscapes_folder")


def build_model(config):
    m = config.model
    return build_segmenter(
        m.backbone,
        m.num_classes,
        depth_multiplier=m.depth_multiplier,
        reduced_tail=m.reduced_tail,
        output_stride=m.output_stride,
        head_filters=m.head_filters,
        attention_pooling=m.attention_pooling,
        crop_size=tuple(config.data.crop_size),
        bn_momentum=m.bn_momentum,
    )


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


def build_dataset(config, split: str, batch_size: int, input_context=None, repeat=None):
    """Batched (images, labels) of `split` and the LabelMap (train ids -> dataset ids)."""
    training = split == "train"
    source, label_map = load_segmentation_source(config.data, split)
    _check_classes(config, label_map)
    source = prepare_task_source(source, config, split, input_context, repeat)
    if training:
        ds = source.map(
            functools.partial(_train_example, config=config),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        ds = ds.batch(batch_size, drop_remainder=True)
    else:
        ds = source.map(_eval_example, num_parallel_calls=tf.data.AUTOTUNE)
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
    """Per-image summed softmax cross-entropy over labelled pixels, and their count.

    The loop divides by the labelled pixels of the whole global batch (DeepLab's normalisation).
    """
    logits = tf.cast(outputs, tf.float32)
    mask = tf.cast(labels["mask"][..., 0], tf.int32)
    valid = tf.not_equal(mask, IGNORE_LABEL)
    safe = tf.where(valid, mask, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    ce = tf.where(valid, ce, 0.0)
    sums = {"ce_loss": tf.reduce_sum(ce, axis=[1, 2])}
    return sums, tf.reduce_sum(tf.cast(valid, tf.float32), axis=[1, 2])


def predict(config, model, images):
    del config
    logits = model(images, training=False)
    return {
        "semantic_map": tf.argmax(logits, axis=-1, output_type=tf.int32),
        "probabilities": tf.nn.softmax(logits),
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
