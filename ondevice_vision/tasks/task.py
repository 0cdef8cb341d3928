"""`Task`: the one interface through which every tool reaches what differs between tasks.

A task module (tasks/detection.py, tasks/segmentation.py) defines the FUNCTIONS below and ends
in `TASK = task_of_module(__name__, name=..., ...)`; the registry in tasks/__init__.py maps the
config's `task` name to that module. Fields:

    name                    the config's `task`
    build_model(config)                                       -> keras.Model
    build_dataset(config, split, batch_size, input_context)   -> (batched dataset, LabelMap)
    compute_losses(config, outputs, labels)                   -> (per-image loss sums, normaliser)
    predict(config, model, images)                            -> dict of post-processed outputs
    visualize(config, images, predictions, labels, label_map) -> one uint8 picture
    palette(config, num_classes)                              -> class colours for exports, or None
    label_map(config)                          -> the model's LabelMap without reading the data
    source_images(config, split)               -> the split's images, decoded, not augmented
    model_for_eval(config, model)              -> the trained model as evaluation runs it
                                                  (default: unchanged)
    write_prediction(runner, outputs, image, output_dir, name, options)
                                                              -> (predictions.json record, picture)
    class_layers            regex of the layers whose shapes depend on the number of classes
                            (train.init_checkpoint_mode="all_but_class_layers" leaves them fresh)
    mediapipe_usage         the lines of MediaPipe Tasks that run a TFLite export ({model}, {image})
    evaluator, export       "module:Class" of the task's evaluator (eval/) and export (export/)
    best_metric             the reported number eval.best_metric defaults to (best checkpoint,
                            early stopping)
    headline_metrics        the reported numbers a one-line comparison of models shows
                            (ondevice-benchmark's columns)

Layering: tasks/ sits below export/ and eval/ (they build datasets and models through it), so
the task names its evaluator and export classes by dotted path and imports them only when asked
(`evaluator_class()`, `export_class()`): the one way a lower layer reaches a higher one, limited
to the task's own files (tests/test_package_layers.py checks both).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from collections.abc import Callable

# The fields a task module defines as functions of the same names.
FUNCTIONS = (
    "build_model",
    "build_dataset",
    "compute_losses",
    "predict",
    "visualize",
    "palette",
    "write_prediction",
    "label_map",
    "source_images",
)
# Functions a task module may leave out (the Task's default then applies).
OPTIONAL_FUNCTIONS = ("model_for_eval",)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    build_model: Callable
    build_dataset: Callable
    compute_losses: Callable
    predict: Callable
    visualize: Callable
    palette: Callable
    write_prediction: Callable
    label_map: Callable
    source_images: Callable
    class_layers: re.Pattern
    mediapipe_usage: str
    evaluator: str
    export: str
    best_metric: str
    headline_metrics: tuple[str, ...]
    model_for_eval: Callable | None = None  # None: _as_trained

    def __post_init__(self):
        if self.model_for_eval is None:
            object.__setattr__(self, "model_for_eval", _as_trained)

    def evaluator_class(self):
        """The task's `eval.evaluator.Evaluator` subclass."""
        return _resolve(self.evaluator)

    def export_class(self):
        """The task's `export.signatures.ServingFunctions` subclass (serving functions, TFLite
        graph and metadata, and how a runner reads its outputs)."""
        return _resolve(self.export)

    def make_evaluator(self, config, label_map):
        return self.evaluator_class()(config, label_map)

    def make_export(self, config, model, label_map, input_size=None, **options):
        """The export object of a model (serving functions, TFLite graph, details)."""
        if label_map.num_classes != config.model.num_classes:
            raise ValueError(
                f"label map has {label_map.num_classes} classes but model.num_classes is "
                f"{config.model.num_classes}"
            )
        return self.export_class()(config, model, label_map, input_size=input_size, **options)

    def mediapipe_lines(self, model_path: str, image_path: str = "photo.jpg") -> str:
        return self.mediapipe_usage.format(model=model_path, image=image_path)


def task_of_module(module_name: str, **fields) -> Task:
    """The Task of a task module: its FUNCTIONS, and `fields` for the rest."""
    module = sys.modules[module_name]
    functions = {name: getattr(module, name) for name in FUNCTIONS}
    functions.update({n: getattr(module, n) for n in OPTIONAL_FUNCTIONS if hasattr(module, n)})
    return Task(**functions, **fields)


def _as_trained(config, model):
    """The default `model_for_eval`: evaluation runs the trained model as it is."""
    del config
    return model


def _resolve(reference: str):
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)
