"""Export a detector or segmenter as a SavedModel with serving signatures (see signatures.py)."""

from __future__ import annotations

from ondevice_vision import tasks
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import signatures
from ondevice_vision.export.export_info import ExportInfo, check_replaceable, write_export_files
from ondevice_vision.files import atomic_directory


def export_saved_model(
    config,
    model,
    label_map: LabelMap,
    export_dir: str,
    input_size=None,
    with_probabilities: bool = False,
    palette=None,
    overwrite: bool = False,
    extra: dict | None = None,
    postprocess: str = "op",
) -> str:
    """Writes the SavedModel, labels.json and export.json to `export_dir` atomically.

    `input_size` (height, width): detection defaults to config.model.input_size; segmentation to
    None (run at each image's own size). `with_probabilities` adds the segmentation
    `probabilities` output ([B, H, W, K] float32: large at Cityscapes resolution).
    """
    functions = tasks.get_task(config).make_export(
        config,
        model,
        label_map,
        input_size,
        with_probabilities=with_probabilities,
        postprocess=postprocess,
    )
    info = ExportInfo(
        task=functions.task,
        format="saved_model",
        input_size=functions.input_size,
        num_classes=label_map.num_classes,
        palette=None if palette is None else tuple(tuple(int(c) for c in p) for p in palette),
        signatures=signatures.SIGNATURES,
        extra=dict(extra or {}, **functions.saved_model_details()),
    )
    archive = signatures.build_archive(functions, model)
    check_replaceable(export_dir, overwrite)
    with atomic_directory(export_dir, overwrite=overwrite) as tmp:
        archive.write_out(tmp, verbose=False)
        write_export_files(tmp, info, label_map, functions.export_files())
    return export_dir
