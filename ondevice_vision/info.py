"""`ondevice-info`: parameters, MAdds and endpoint shapes of a backbone or a whole model, as JSON.

ondevice-info --model=mobilenet_v3_large --include_top
ondevice-info --model=mobilenet_v3_small --input_size=320,256 --reduced_tail=detection
ondevice-info --config=ondevice_vision/configs/ssdlite_mobilenet_v3_large_320_coco.py
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from ondevice_vision import cli
from ondevice_vision.backbones import BACKBONES
from ondevice_vision.sizes import parse_size

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
flags.DEFINE_bool("table", False, "Print the models table (measured vs published) as Markdown.")

# label, builder, options, reference trainable count (keras.applications; EdgeTPU: slim),
# paper params, paper MAdds at 224 (docs/reference_facts.md).
PUBLISHED = (
    ("MobileNetV3-Large 1.0", "mobilenet_v3_large", {}, 5_483_032, 5.4e6, 219e6),
    (
        "MobileNetV3-Large 0.75",
        "mobilenet_v3_large",
        {"depth_multiplier": 0.75},
        3_993_528,
        4.0e6,
        155e6,
    ),
    (
        "MobileNetV3-Large-minimalistic",
        "mobilenet_v3_large_minimalistic",
        {},
        3_924_288,
        3.9e6,
        209e6,
    ),
    ("MobileNetV3-Small 1.0", "mobilenet_v3_small", {}, 2_542_856, 2.5e6, 56e6),
    (
        "MobileNetV3-Small 0.75",
        "mobilenet_v3_small",
        {"depth_multiplier": 0.75},
        2_041_872,
        None,
        44e6,
    ),
    (
        "MobileNetV3-Small-minimalistic",
        "mobilenet_v3_small_minimalistic",
        {},
        2_044_736,
        None,
        None,
    ),
    ("MobileNetEdgeTPU 1.0", "mobilenet_edgetpu", {"num_classes": 1001}, 4_092_713, 4.0e6, 990e6),
    (
        "MobileNetEdgeTPU 0.75",
        "mobilenet_edgetpu",
        {"num_classes": 1001, "depth_multiplier": 0.75},
        2_989_441,
        2.9e6,
        624e6,
    ),
)


def models_table() -> list[dict]:
    """Every backbone with its classifier at 224: measured next to the reference figures."""
    from ondevice_vision import model_stats
    from ondevice_vision.backbones import build_backbone

    rows = []
    for label, name, options, reference, paper_params, paper_madds in PUBLISHED:
        model = build_backbone(name, include_top=True, **options)
        rows.append(
            {
                "model": label,
                "trainable_params": model_stats.count_params(model)["trainable_params"],
                "reference_params": reference,
                "paper_params": paper_params,
                "madds": model_stats.count_madds(model, 224),
                "paper_madds": paper_madds,
            }
        )
    return rows


def _millions(value) -> str:
    return f"{value / 1e6:.1f}M" if value else "-"


def format_table(rows) -> str:
    lines = [
        "| model (224, with classifier) | params (ours) | params (keras.applications / slim) "
        "| params (paper) | MAdds (ours) | MAdds (paper) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['trainable_params']:,} | {r['reference_params']:,} | "
            f"{_millions(r['paper_params'])} | {r['madds'] / 1e6:.1f}M | "
            f"{_millions(r['paper_madds'])} |"
        )
    return "\n".join(lines)


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
    if FLAGS.table:
        print(format_table(models_table()))
        return
    if config is None and FLAGS.model is None:
        names = ", ".join(BACKBONES)
        raise app.UsageError(f"Give --model=NAME (one of {names}) or --config=FILE")
    size = parse_size(FLAGS.input_size)  # before building anything: a typo fails at once
    if config is not None:
        from ondevice_vision import tasks

        model = tasks.get_task(config).build_model(config)
        size = size or tuple(config.model.input_size)
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
        size = size or (224, 224)
    print(json.dumps(describe(model, size)))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
