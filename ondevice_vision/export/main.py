"""`ondevice-export`: a trained checkpoint -> SavedModel or TFLite (float, fp16, int8).

    ondevice-export --config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py \
        --workdir=workdir/shapes_det --export_dir=exports/shapes_det
    ondevice-export ... --format=tflite --quantization=int8 --export_dir=exports/shapes_det_int8

The checkpoint is the latest in WORKDIR/checkpoints unless --checkpoint is given. The export
directory gets the model, labels.json and export.json (see export_info.py), written atomically.
The label map is the one the training run recorded (WORKDIR/labels.json; tasks/recorded_labels.py),
else the config's, read without the data (COCO's and Cityscapes' ship with the package), so
Google's imported models export with no dataset on disk; --label_map names another labels.json.
int8 from a quantization-aware checkpoint (`train.quantization.enabled`, trained past `delay`)
uses its learned ranges and calibrates nothing.
"""

from __future__ import annotations

import json

from absl import flags, logging
from ml_collections import config_flags

from ondevice_vision import cli
from ondevice_vision.sizes import parse_size

FLAGS = flags.FLAGS


def define_flags():
    """Called by run(): importing this module (tests, other tools) defines no flags."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
    flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/ inside).")
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A checkpoint prefix or directory, or 'best' (WORKDIR/checkpoints/best) (default: latest).",
    )
    flags.DEFINE_string("export_dir", None, "Output directory (must not exist unless --overwrite).")
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"], "What to write.")
    flags.DEFINE_enum("quantization", "none", ["none", "fp16", "int8"], "TFLite quantization.")
    flags.DEFINE_string(
        "input_size",
        None,
        "HEIGHT,WIDTH the network runs at. Detection: default model.input_size. Segmentation "
        "SavedModel: default each image's own size; segmentation TFLite: default model.input_size, "
        "else data.crop_size.",
    )
    flags.DEFINE_integer(
        "num_calibration_images", 100, "int8: how many images calibrate (fewer are refused)."
    )
    flags.DEFINE_string(
        "calibration_dir",
        None,
        "int8: calibrate on this folder's images, preprocessed as for inference (default: the "
        "training input pipeline, augmented; export/calibration.py).",
    )
    flags.DEFINE_enum(
        "calibration_split",
        None,
        ["train", "eval"],
        "int8: calibrate on this split of the config's data, preprocessed as for inference.",
    )
    flags.DEFINE_boolean(
        "use_regular_nms",
        False,
        "Detection TFLite: per-class NMS (as the SavedModel) instead of the OD API's fast "
        "class-agnostic NMS. LiteRT computes it wrongly with several threads, so such models "
        "run single-threaded in ondevice-eval / ondevice-predict.",
    )
    flags.DEFINE_enum(
        "postprocess",
        "op",
        ["op", "none"],
        "Detection: 'none' ends the graph in the raw box encodings and class scores per anchor "
        "(no TFLite_Detection_PostProcess; anchors.npy and the box coder in export.json).",
    )
    flags.DEFINE_boolean(
        "with_probabilities", False, "Segmentation SavedModel: add the probabilities output."
    )
    flags.DEFINE_string(
        "label_map", None, "A labels.json to use instead of the one the training run recorded."
    )
    flags.DEFINE_boolean(
        "allow_other_label_map",
        False,
        "Use --label_map even when it differs from the one recorded in WORKDIR/labels.json.",
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing export directory.")
    flags.mark_flags_as_required(["config", "export_dir"])


def resolve_input_size(config, override, fmt: str):
    """The export input size (see the --input_size flag), or None for native segmentation."""
    from ondevice_vision import tasks

    if override is not None:
        return tuple(override)
    return tasks.get_task(config).export_class().default_input_size(config, fmt)


def label_map_and_palette(
    config, label_map_file: str | None = None, workdir: str | None = None, allow_other=False
):
    """The trained model's label map (recorded_labels.trained_label_map) and class colours."""
    from ondevice_vision import tasks
    from ondevice_vision.tasks.recorded_labels import trained_label_map

    label_map = trained_label_map(config, workdir, label_map_file, allow_other)
    return label_map, tasks.get_task(config).palette(config, label_map.num_classes)


def export(
    config,
    model,
    label_map,
    export_dir: str,
    fmt: str = "saved_model",
    quantization: str = "none",
    input_size=None,
    palette=None,
    num_calibration_images: int = 100,
    use_regular_nms: bool = False,
    with_probabilities: bool = False,
    overwrite: bool = False,
    extra: dict | None = None,
    quantization_state=None,
    calibration_dir: str | None = None,
    calibration_split: str | None = None,
    postprocess: str = "op",
    graphs=None,
) -> str:
    """Library entry point of the CLI (the model already holds its trained weights).

    `quantization_state`: the learned ranges of a quantization-aware checkpoint (int8 TFLite).
    `graphs`: a tflite.GraphArchives shared by several TFLite exports of this model.
    """
    from ondevice_vision.export.saved_model import export_saved_model
    from ondevice_vision.export.tflite import export_tflite

    size = resolve_input_size(config, input_size, fmt)
    if fmt == "saved_model":
        if quantization != "none":
            raise ValueError("--quantization applies to --format=tflite only")
        return export_saved_model(
            config,
            model,
            label_map,
            export_dir,
            input_size=size,
            with_probabilities=with_probabilities,
            palette=palette,
            overwrite=overwrite,
            extra=extra,
            postprocess=postprocess,
        )
    if fmt == "tflite":
        return export_tflite(
            config,
            model,
            label_map,
            export_dir,
            size,
            quantization=quantization,
            quantization_state=quantization_state,
            num_calibration_images=num_calibration_images,
            calibration_dir=calibration_dir,
            calibration_split=calibration_split,
            use_regular_nms=use_regular_nms,
            palette=palette,
            overwrite=overwrite,
            extra=extra,
            postprocess=postprocess,
            graphs=graphs,
        )
    raise ValueError(f"format must be saved_model or tflite, got {fmt!r}")


def main(argv):
    del argv
    from ondevice_vision.configs.checks import check_config

    config = FLAGS.config
    check_config(config)
    from ondevice_vision.tasks import load_trained_model

    input_size = parse_size(FLAGS.input_size)
    # A bad --label_map file fails before the checkpoint is loaded.
    label_map, palette = label_map_and_palette(
        config, FLAGS.label_map, FLAGS.workdir, FLAGS.allow_other_label_map
    )
    model, path = load_trained_model(config, FLAGS.workdir, FLAGS.checkpoint)
    state = None
    if FLAGS.format == "tflite" and FLAGS.quantization == "int8":
        from ondevice_vision.quantization import qat

        state = qat.restore_for_export(config, model, path)
    out = export(
        config,
        model,
        label_map,
        FLAGS.export_dir,
        fmt=FLAGS.format,
        quantization=FLAGS.quantization,
        input_size=input_size,
        palette=palette,
        num_calibration_images=FLAGS.num_calibration_images,
        use_regular_nms=FLAGS.use_regular_nms,
        with_probabilities=FLAGS.with_probabilities,
        overwrite=FLAGS.overwrite,
        extra={"checkpoint": path},
        quantization_state=state,
        calibration_dir=FLAGS.calibration_dir,
        calibration_split=FLAGS.calibration_split,
        postprocess=FLAGS.postprocess,
    )
    logging.info("Exported %s to %s", path, out)
    print(json.dumps({"export_dir": out, "checkpoint": path, "format": FLAGS.format}))


def run():
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
