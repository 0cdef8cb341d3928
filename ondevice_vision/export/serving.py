"""Serving signatures for SavedModels: uint8 images, encoded image bytes, serialized tf.Examples.

Signatures (inputs -> outputs), the same three for both tasks:

    serving_default(images: uint8 [B, H, W, 3], any H, W)
    image_bytes(encoded_images: string [B], JPEG / PNG / GIF / BMP / WebP)
    tf_example(serialized_examples: string [B], tf.train.Example with `image/encoded`)

Detection: images are resized (bilinear, as the eval pipeline does) to the model input size; outputs
detection_boxes float32 [B, M, 4] (normalised ymin, xmin, ymax, xmax of the original image),
detection_classes int32 [B, M] (dataset category ids, e.g. COCO ids; 0 past num_detections),
detection_scores float32 [B, M], num_detections int32 [B], after NMS.

Segmentation: semantic_map int32 [B, H, W] (contiguous class index per pixel, see labels.json for
the dataset ids) and, if requested, probabilities float32 [B, H, W, K], at the input resolution.
With an export input size the network runs at that size and its logits are resized back (bilinear)
before the argmax; without one it runs at the image's own size. Encoded images of different sizes
in one batch are run one by one and their outputs padded (bottom / right) to the largest; the
`image_size` output (int32 [B, 2]) says which part of each map is real (padding: -1 / 0).

The archive is a `keras.export.ExportArchive`: it tracks the model's variables only, so the
SavedModel carries no training-mode functions and the TFLite converter can freeze every weight.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ondevice_vision.data.image_decode import decode_rgb
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.train import detection_task

SIGNATURES = ("serving_default", "image_bytes", "tf_example")
_PAD_CLASS = -1


def _resize(images, size):
    """uint8 or float [B, h, w, 3] -> float32 [B, H, W, 3] in 0..255 (detection_augment's resize)."""
    resized = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def _examples_to_encoded(serialized):
    features = tf.io.parse_example(
        serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    )
    return features["image/encoded"]


class _DetectionFunctions:
    def __init__(self, config, model, label_map: LabelMap, input_size):
        self.config = config
        self.model = model
        self.input_size = tuple(int(v) for v in input_size)
        self.dataset_ids = tf.constant(label_map.dataset_ids, tf.int32)

    def detect(self, images_float):
        """Float32 images already at the input size -> detections with dataset ids."""
        det = detection_task.predict(self.config, self.model, images_float)
        slots = tf.shape(det["detection_classes"])[1]
        valid = tf.range(slots)[tf.newaxis, :] < det["num_detections"][:, tf.newaxis]
        ids = tf.gather(self.dataset_ids, det["detection_classes"])
        det["detection_classes"] = tf.where(valid, ids, 0)
        return det

    def serving_default(self, images):
        return self.detect(_resize(images, self.input_size))

    def image_bytes(self, encoded_images):
        images = tf.map_fn(
            lambda encoded: _resize(decode_rgb(encoded)[tf.newaxis], self.input_size)[0],
            encoded_images,
            fn_output_signature=tf.TensorSpec([*self.input_size, 3], tf.float32),
        )
        return self.detect(images)

    def tf_example(self, serialized_examples):
        return self.image_bytes(_examples_to_encoded(serialized_examples))


class _SegmentationFunctions:
    def __init__(self, config, model, label_map: LabelMap, input_size, with_probabilities):
        del config
        self.model = model
        self.num_classes = label_map.num_classes
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)
        self.with_probabilities = with_probabilities

    def segment(self, images):
        """uint8/float [B, H, W, 3] -> outputs at H x W."""
        x = tf.cast(images, tf.float32)
        if self.input_size is None:
            logits = self.model(x, training=False)
        else:
            logits = self.model(_resize(x, self.input_size), training=False)
            logits = tf.image.resize(logits, tf.shape(images)[1:3], method="bilinear")
        logits = tf.cast(logits, tf.float32)
        out = {"semantic_map": tf.argmax(logits, axis=-1, output_type=tf.int32)}
        if self.with_probabilities:
            out["probabilities"] = tf.nn.softmax(logits)
        return out

    def serving_default(self, images):
        return self.segment(images)

    def image_bytes(self, encoded_images):
        # Images may differ in size: run each alone (padding would change the attention pooling)
        # and pad the outputs to the largest.
        count = tf.shape(encoded_images)[0]
        keys = ["semantic_map"] + (["probabilities"] if self.with_probabilities else [])
        arrays = {
            k: tf.TensorArray(
                tf.float32 if k == "probabilities" else tf.int32, size=count, infer_shape=False
            )
            for k in keys
        }
        sizes = tf.TensorArray(tf.int32, count)

        def body(i, sizes, arrays):
            image = decode_rgb(encoded_images[i])[tf.newaxis]
            out = self.segment(image)
            arrays = {k: arrays[k].write(i, out[k][0]) for k in keys}
            return i + 1, sizes.write(i, tf.shape(image)[1:3]), arrays

        _, sizes, arrays = tf.while_loop(
            lambda i, *_: i < count, body, (tf.constant(0), sizes, arrays)
        )
        sizes = tf.reshape(sizes.stack(), [-1, 2])
        largest = tf.reduce_max(tf.concat([sizes, tf.zeros([1, 2], tf.int32)], 0), axis=0)

        def padded(key, value):
            def one(i):
                item = arrays[key].read(i)
                pad_h = largest[0] - tf.shape(item)[0]
                pad_w = largest[1] - tf.shape(item)[1]
                paddings = [[0, pad_h], [0, pad_w]] + ([[0, 0]] if key == "probabilities" else [])
                return tf.pad(item, paddings, constant_values=value)

            shape = [None, None] + ([self.num_classes] if key == "probabilities" else [])
            dtype = tf.float32 if key == "probabilities" else tf.int32
            return tf.map_fn(one, tf.range(count), fn_output_signature=tf.TensorSpec(shape, dtype))

        out = {"semantic_map": padded("semantic_map", _PAD_CLASS), "image_size": sizes}
        if self.with_probabilities:
            out["probabilities"] = padded("probabilities", 0.0)
        return out

    def tf_example(self, serialized_examples):
        return self.image_bytes(_examples_to_encoded(serialized_examples))


def serving_functions(
    task: str, config, model, label_map: LabelMap, input_size=None, with_probabilities=True
):
    """An object with `serving_default`, `image_bytes` and `tf_example` methods (plain Python)."""
    if task == "detection":
        if input_size is None:
            input_size = tuple(config.model.input_size)
        return _DetectionFunctions(config, model, label_map, input_size)
    if task == "segmentation":
        return _SegmentationFunctions(config, model, label_map, input_size, with_probabilities)
    raise ValueError(f"unknown task {task!r}")


def build_archive(functions, model) -> keras.export.ExportArchive:
    """The ExportArchive with the three signatures; `write_out(dir)` saves it."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        functions.serving_default,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "image_bytes",
        functions.image_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="encoded_images")],
    )
    archive.add_endpoint(
        "tf_example",
        functions.tf_example,
        input_signature=[tf.TensorSpec([None], tf.string, name="serialized_examples")],
    )
    return archive
