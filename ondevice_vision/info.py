"""`ondevice-info`: parameters, MAdds and endpoint shapes of a backbone or a whole model, as JSON.

ondevice-info --model=mobilenet_v3_large --include_top
ondevice-info --model=mobilenet_v3_small --input_size=320,256 --reduced_tail=detection
ondevice-info --config=ondevice_vision/configs/ssdlite_mobilenet_v3_large_320_coco.py
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from ondevice_vision.backbones import BACKBONES

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, list(BACKBONES), "Backbone to describe (or use --config).")
flags.DEFINE_string("input_size", None, "Input size: 224 or H,W (default 224, or the config's).")
flags.DEFINE_float("depth_multiplier", 1.0, "Width multiplier (0.75, 1.0, ...).")
flags.DEFINE_enum(
    "reduced_tail",
    "none",
    ["none", "detection", "segmentation"],
    "Halve the last stage's channels.",
)
flags.DEFINE_enum("output_stride", "32", ["8", "16", "32"], "Output stride by dilation.")
flags.DEFINE_bool("include_top", False, "Add the ImageNet classifier.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width with --include_top.")
config_flags.DEFINE_config_file("config", None, "A model config (detector or segmenter).")


def parse_input_size(text) -> tuple[int, int]:
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise app.UsageError(f"--input_size must be N or H,W with positive integers, got {text!r}")
    return sizes[0], sizes[1]


def describe(model, input_size) -> dict:
    from ondevice_vision import model_stats

    info = {"model": model.name, "input_size": list(input_size)}
    info.update(model_stats.count_params(model))
    info["madds"] = model_stats.count_madds(model, input_size)
    info["endpoints"] = model_stats.endpoint_shapes(model, input_size)
    return info


def main(argv):
    del argv
    config = FLAGS.config
    if config is None and FLAGS.model is None:
        names = ", ".join(BACKBONES)
        raise app.UsageError(f"Give --model=NAME (one of {names}) or --config=FILE")
    if config is not None:
        from ondevice_vision.train import tasks

        model = tasks.get_task(config).build_model(config)
        size = (
            parse_input_size(FLAGS.input_size)
            if FLAGS.input_size
            else tuple(config.model.input_size)
        )
    else:
        from ondevice_vision.backbones import build_backbone

        reduced = None if FLAGS.reduced_tail == "none" else FLAGS.reduced_tail
        model = build_backbone(
            FLAGS.model,
            depth_multiplier=FLAGS.depth_multiplier,
            include_top=FLAGS.include_top,
            num_classes=FLAGS.num_classes,
            reduced_tail=reduced,
            output_stride=int(FLAGS.output_stride),
        )
        size = parse_input_size(FLAGS.input_size or "224")
    print(json.dumps(describe(model, size)))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
