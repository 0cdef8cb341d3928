"""Exporting a segmenter: SavedModel signatures and the TFLite logits graph.

SavedModel outputs: semantic_map int32 [B, H, W] (contiguous class index per pixel, see
labels.json for the dataset ids) and, if requested, probabilities float32 [B, H, W, K], at the
input resolution. With an export input size the network runs at that size and its logits are
resized back (bilinear) before the argmax; without one it runs at the image's own size. Encoded
images of different sizes in one batch are run one by one and their outputs padded (bottom /
right) to the largest; the `image_size` output (int32 [B, 2]) says which part of each map is real
(padding: -1 / 0). TFLite graphs output logits [1, H, W, K] at the export input size.

Multi-scale / flip / sliding-window inference is an export option for SavedModels: the config's
`eval.scales`, `eval.flip`, `eval.window`, `eval.window_stride` (e.g. `ondevice-export ...
--config.eval.scales=0.75,1.0,1.25,1.5,1.75 --config.eval.flip=True`) are built into the serving
functions (tasks/segmentation_inference.py: softmax probabilities averaged at the input size);
export.json records them. TFLite graphs keep the single forward pass.
"""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision.data.image_decode import decode_upright, resize_pixels
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import tflite_metadata
from ondevice_vision.export.signatures import ServingFunctions
from ondevice_vision.tasks import segmentation_inference

_PAD_CLASS = -1


class SegmentationExport(ServingFunctions):
    task = "segmentation"
    allow_custom_ops = False
    int8_output_type = tf.uint8  # the logits stay integer in int8 graphs

    def __init__(
        self,
        config,
        model,
        label_map: LabelMap,
        input_size=None,
        with_probabilities: bool = False,
        postprocess: str = "op",
        **unused,
    ):
        del unused
        if postprocess != "op":
            raise ValueError("--postprocess=none applies to detection exports only")
        self.config = config
        self.inference = segmentation_inference.eval_options(config) if config else None
        if self.inference and segmentation_inference.is_plain(self.inference):
            self.inference = None
        self.model = model
        self.num_classes = label_map.num_classes
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)
        self.with_probabilities = with_probabilities

    @staticmethod
    def default_input_size(config, fmt: str):
        """SavedModels run at each image's own size; TFLite needs a fixed one."""
        if fmt == "saved_model":
            return None
        for section, key in (("model", "input_size"), ("data", "crop_size")):
            value = config[section].get(key)
            if value:
                size = (value, value) if isinstance(value, int) else tuple(value)
                return tuple(int(v) for v in size)
        raise ValueError("segmentation TFLite export needs --input_size=HEIGHT,WIDTH")

    # ------------------------------------------------------------- SavedModel
    def segment(self, images):
        """uint8/float [B, H, W, 3] -> outputs at H x W."""
        x = tf.cast(images, tf.float32)
        if self.input_size is not None:
            x = resize_pixels(x, self.input_size)
        if self.inference:
            scores = segmentation_inference.class_probabilities(self.model, x, **self.inference)
        else:
            scores = tf.cast(self.model(x, training=False), tf.float32)  # logits
        if self.input_size is not None:
            scores = tf.image.resize(scores, tf.shape(images)[1:3], method="bilinear")
        out = {"semantic_map": tf.argmax(scores, axis=-1, output_type=tf.int32)}
        if self.with_probabilities:
            out["probabilities"] = scores if self.inference else tf.nn.softmax(scores)
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
            image = decode_upright(encoded_images[i])[tf.newaxis]
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

    def saved_model_details(self) -> dict:
        details = {"with_probabilities": bool(self.with_probabilities)}
        if self.inference:
            details["inference"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.inference.items()
            }
        return details

    # ------------------------------------------------------------- TFLite
    def tflite_graph_fn(self, forward=None):
        """`forward(images)`: the network's logits (default `model(images, training=False)`)."""
        model = self.model
        if forward is None:
            forward = lambda images: model(images, training=False)  # noqa: E731

        def graph(images):
            return {"logits": tf.cast(forward(images), tf.float32)}

        return graph

    def tflite_details(self) -> dict:
        return {}

    # ------------------------------------------------------------- TFLite metadata
    def tflite_model_metadata(self, label_map: LabelMap, input_size, input_dtype: str):
        """(ModelMetadata flatbuffer, subgraph output order) for tflite_metadata.add_metadata."""
        height, width = input_size
        backbone = self.config.model.backbone
        metadata = tflite_metadata.segmentation_metadata(
            f"LR-ASPP {backbone} {height}x{width}",
            f"LR-ASPP semantic segmenter ({backbone} backbone, {height}x{width} {input_dtype} "
            f"input, {label_map.num_classes} classes); exported by ondevice_vision.",
            (height, width),
            input_dtype,
        )
        return metadata, None

    # ------------------------------------------------------------- running an export
    @staticmethod
    def saved_model_outputs(runner, outputs: dict, with_probabilities: bool) -> dict:
        """What a SavedModelRunner returns: the probabilities only when asked (and exported)."""
        if with_probabilities and "probabilities" not in outputs:
            raise ValueError(f"{runner.path} was exported without the probabilities output")
        if not with_probabilities:
            outputs.pop("probabilities", None)
        return outputs

    @staticmethod
    def tflite_outputs(runner, raw: dict, image, with_probabilities: bool) -> dict:
        """One image's TFLite logits -> its class map (and probabilities) at the image's size."""
        del runner
        logits = tf.constant(raw["logits"], tf.float32)
        if tuple(logits.shape[1:3]) != tuple(image.shape[:2]):
            logits = tf.image.resize(logits, image.shape[:2], method="bilinear")
        out = {"semantic_map": tf.argmax(logits[0], axis=-1, output_type=tf.int32).numpy()}
        if with_probabilities:
            out["probabilities"] = tf.nn.softmax(logits[0]).numpy()
        return out

    @staticmethod
    def model_index_outputs(runner, outputs: dict) -> dict:
        """Class maps hold model class indices already."""
        del runner
        return outputs
