"""The segmentation task: LR-ASPP model, crop/scale/flip input pipeline, softmax CE, mIoU.

Evaluation runs at full resolution; with `eval.official_cityscapes` the predictions are also
written as labelId PNGs and scored by cityscapesscripts' own evaluator.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from ondevice_vision.data import cityscapes_labels, segmentation_augment
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.data.segmentation_sources import distinct_palette, load_segmentation_source
from ondevice_vision.export import drawing
from ondevice_vision.lr_aspp.segmenter import build_segmenter

NAME = "segmentation"
IGNORE_LABEL = 255
HEADLINE_METRIC = "mIoU"
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
    return distinct_palette(num_classes)


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
    )
    return image, {"mask": mask}


def _eval_example(example):
    image, mask = segmentation_augment.preprocess_eval(example)
    size = tf.shape(image)[:2]
    return image, {"mask": mask, "image_size": size, "image_id": example["image_id"]}


def build_dataset(config, split: str, batch_size: int, input_context=None, repeat=None):
    """Batched (images, labels) of `split` and the LabelMap (train ids -> dataset ids)."""
    training = split == "train"
    source, label_map, _ = load_segmentation_source(config.data, split)
    _check_classes(config, label_map)
    if input_context is not None and input_context.num_input_pipelines > 1:
        source = source.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        source = source.shuffle(config.train.shuffle_buffer, seed=config.train.seed)
    if repeat if repeat is not None else training:
        source = source.repeat()
    elif config.eval.max_images:
        source = source.take(config.eval.max_images)
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


class Evaluator:
    """Streaming confusion matrix -> mIoU, pixel accuracy, per-class IoU (+ official Cityscapes)."""

    def __init__(self, config, label_map: LabelMap):
        from ondevice_vision.eval.miou import StreamingConfusionMatrix

        self.config = config
        self.label_map = label_map
        self.matrix = StreamingConfusionMatrix(label_map.num_classes, IGNORE_LABEL)
        self.official = bool(config.eval.get("official_cityscapes", False))
        self.predicted = set()
        self.prediction_dir = None
        if self.official:
            import tempfile

            self.prediction_dir = config.eval.get("prediction_dir") or tempfile.mkdtemp(
                prefix="cityscapes_pred_"
            )
            os.makedirs(self.prediction_dir, exist_ok=True)

    def update(self, predictions: dict, labels: dict) -> None:
        maps = predictions["semantic_map"]
        for i in range(len(maps)):
            h, w = (int(v) for v in labels["image_size"][i])
            pred = maps[i][:h, :w]
            self.matrix.update(labels["mask"][i][:h, :w, 0], pred)
            if self.official:
                from ondevice_vision.eval import cityscapes_official

                stem = labels["image_id"][i]
                stem = stem.decode() if isinstance(stem, bytes) else str(stem)
                cityscapes_official.write_prediction_png(pred, stem, self.prediction_dir)
                self.predicted.add(cityscapes_official.core_name(stem))

    def result(self) -> dict:
        metrics = self.matrix.to_json_dict()
        metrics = {
            "mIoU": metrics["mIoU"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": dict(zip(self.label_map.names, metrics["per_class_iou"], strict=True)),
        }
        if self.official:
            metrics["official_cityscapes"] = self._official()
        return metrics

    def _official(self) -> dict:
        from ondevice_vision.data import cityscapes_folder
        from ondevice_vision.eval import cityscapes_official

        data = self.config.data
        if data.source != "cityscapes_folder":
            raise ValueError("eval.official_cityscapes needs data.source='cityscapes_folder'")
        files = cityscapes_folder.list_files(data.root, data.eval_split)
        if files.eval_pairs is None:
            raise FileNotFoundError(
                f"official Cityscapes evaluation needs every *_gtFine_labelIds.png under {data.root}"
            )
        # Only the images this run predicted (eval.max_images may have cut the split short).
        gt = [
            label
            for _, label in files.eval_pairs
            if cityscapes_official.core_name(label) in self.predicted
        ]
        return cityscapes_official.run_official_evaluation(self.prediction_dir, gt)

    def write(self, directory: str) -> None:
        del directory


def make_evaluator(config, label_map: LabelMap) -> Evaluator:
    return Evaluator(config, label_map)


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


def write_cityscapes_submission(
    config, model, out_dir: str, zip_path: str | None = None, expected_shape=(1024, 2048)
) -> list[str]:
    """Predicts every image of the eval split (e.g. `--config.data.eval_split=test`) and writes
    the labelId PNGs of the Cityscapes test server (and optionally their zip archive)."""
    from ondevice_vision.eval import cityscapes_official

    dataset, _ = build_dataset(config, "eval", config.eval.batch_size)
    predict_fn = tf.function(lambda images: predict(config, model, images)["semantic_map"])

    def predictions():
        for images, labels in dataset:
            maps = predict_fn(images).numpy()
            for i in range(len(maps)):
                h, w = (int(v) for v in labels["image_size"][i])
                stem = labels["image_id"][i].numpy().decode()
                yield stem, maps[i][:h, :w]

    return cityscapes_official.write_submission(predictions(), out_dir, expected_shape, zip_path)
