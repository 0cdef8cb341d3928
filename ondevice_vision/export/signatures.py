"""The three serving signatures every SavedModel export has, and the archive that holds them.

    serving_default(images: uint8 [B, H, W, 3], any H, W)
    image_bytes(encoded_images: string [B], JPEG / PNG / GIF / BMP / WebP)
    tf_example(serialized_examples: string [B], tf.train.Example with `image/encoded`)

Encoded images are turned upright by their EXIF orientation (JPEG, PNG), as `ondevice-predict`
and image viewers do, so a phone photo sent as stored gives boxes and maps of the picture its
user sees. What each returns is the task's (export/detection.py, export/segmentation.py). The archive is a
`keras.export.ExportArchive`: it tracks the model's variables only, so the SavedModel carries no
training-mode functions and the TFLite converter can freeze every weight.
"""

from __future__ import annotations

import keras
import tensorflow as tf

SIGNATURES = ("serving_default", "image_bytes", "tf_example")


def examples_to_encoded(serialized):
    features = tf.io.parse_example(
        serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    )
    return features["image/encoded"]


class ServingFunctions:
    """What a task export provides: `serving_default` and `image_bytes`; `tf_example` follows."""

    # Whether the TFLite file gets TFLite Model Metadata (MediaPipe Tasks need the full graph).
    has_metadata = True

    def tf_example(self, serialized_examples):
        return self.image_bytes(examples_to_encoded(serialized_examples))

    def export_files(self) -> dict:
        """Extra files of the export directory besides the model: name -> NumPy array."""
        return {}

    @staticmethod
    def runner_data(directory: str, info) -> dict:
        """What a runner of this export needs from its directory besides the model (read once;
        `export_data` of the runner passed to `saved_model_outputs` / `tflite_outputs`)."""
        del directory, info
        return {}


def build_archive(functions, model) -> keras.export.ExportArchive:
    """The ExportArchive with the three signatures of `functions`; `write_out(dir)` saves it."""
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


def tflite_graph_archive(graph_fn, model, input_size, track=()) -> keras.export.ExportArchive:
    """The fixed-shape graph the TFLite converter takes: float32 pixels [1, H, W, 3] -> outputs.

    `track`: further objects whose variables the graph reads (quantization ranges).
    """
    height, width = (int(v) for v in input_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in track:
        archive.track(resource)
    archive.add_endpoint(
        "serving_default",
        graph_fn,
        input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="images")],
    )
    return archive
