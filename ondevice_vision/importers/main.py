"""`ondevice-import`: a TF1 checkpoint of Google's into an ordinary checkpoint of ours.

    ondevice-import --config=CONFIG --checkpoint=PATH/model.ckpt --workdir=OUT \
        [--use_moving_averages]

An Object Detection API checkpoint (the model zoo's SSDLite files) fills the whole detector of a
detection config; a DeepLab LR-ASPP checkpoint (`deeplab_mnv3_*_cityscapes_trainfine`) the whole
segmenter of a `model.lraspp_variant="deeplab"` config; a slim ImageNet checkpoint fills the
backbone of any config, the rest keeping its initialisation. OUT then holds checkpoints/ckpt-0 and
config.json as a training run writes them, plus labels.json, the config's label map (the COCO and
Cityscapes ones ship with the package, so no dataset is needed), so ondevice-eval,
ondevice-export, ondevice-predict (--workdir=OUT) and train.init_checkpoint=OUT work unchanged.
What was assigned and skipped is printed as JSON.
"""

from __future__ import annotations

import json
import os

from absl import flags, logging
from ml_collections import config_flags

from ondevice_vision import cli

FLAGS = flags.FLAGS


def define_flags():
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
    flags.DEFINE_string("checkpoint", None, "TF1 checkpoint prefix, e.g. DIR/model.ckpt.")
    flags.DEFINE_string("workdir", None, "Output directory (checkpoints/ and config.json).")
    flags.DEFINE_bool(
        "use_moving_averages",
        False,
        "Take each variable's ExponentialMovingAverage value where the checkpoint has one (the "
        "OD API's use_moving_averages; slim's --moving_average_decay).",
    )
    flags.DEFINE_bool(
        "adopt_workdir",
        False,
        "Write into a --workdir that holds files other than a run's (refused without this flag).",
    )
    flags.mark_flags_as_required(["config", "checkpoint", "workdir"])


def read_variable_names(checkpoint: str) -> list[str]:
    """The variable names of a TF1 checkpoint; a one-line error naming the file otherwise."""
    import tensorflow as tf

    from ondevice_vision.backbones import slim_checkpoint

    if os.path.isdir(checkpoint):
        raise FileNotFoundError(
            f"{checkpoint}: is a folder; pass the checkpoint prefix inside it (DIR/model.ckpt)"
        )
    if not slim_checkpoint.is_tf1_checkpoint(checkpoint):
        raise FileNotFoundError(
            f"{checkpoint}.index not found: pass the checkpoint prefix (e.g. DIR/model.ckpt)"
        )
    try:
        names = [name for name, _ in tf.train.list_variables(checkpoint)]
    except (tf.errors.OpError, ValueError) as e:
        message = " ".join(str(getattr(e, "message", e)).split())
        raise ValueError(f"{checkpoint}: not a readable checkpoint ({message})") from e
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in names:
        raise ValueError(
            f"{checkpoint}: is a TF2 (object-based) checkpoint, not a TF1 one of the Object "
            "Detection API or slim; a checkpoint of ours is used directly (--workdir, "
            "train.init_checkpoint)"
        )
    if not names:
        raise ValueError(f"{checkpoint}: the checkpoint holds no variables")
    return names


def import_checkpoint(
    config,
    checkpoint: str,
    workdir: str,
    use_moving_averages: bool = False,
    adopt_workdir: bool = False,
) -> dict:
    """Library entry point of the CLI; returns the JSON-able report."""
    import tensorflow as tf

    from ondevice_vision import checkpoints, tasks
    from ondevice_vision.backbones import slim_checkpoint
    from ondevice_vision.importers import deeplab, od_api
    from ondevice_vision.models.lraspp import Segmenter
    from ondevice_vision.models.ssdlite import SSDLiteDetector
    from ondevice_vision.tasks import recorded_labels
    from ondevice_vision.workdir_owner import claim_workdir

    checkpoint = checkpoints.prefix_of(checkpoint)
    names = read_variable_names(checkpoint)
    # Checkpoints of a whole model: (kind, test, loader, what it is, the model it fills and the
    # config that builds one).
    whole_models = (
        ("od_api", od_api.is_od_api_checkpoint, od_api.load_od_api_checkpoint,
         "an Object Detection API checkpoint", SSDLiteDetector, "an SSDLite detection"),
        ("deeplab", deeplab.is_deeplab_checkpoint, deeplab.load_deeplab_checkpoint,
         "a DeepLab LR-ASPP checkpoint", Segmenter, "an LR-ASPP segmentation"),
    )  # fmt: skip
    found = [entry for entry in whole_models if entry[1](checkpoint)]
    scope = slim_checkpoint.slim_scope(config.model.backbone)
    if not found and not any(name.startswith(scope) for name in names):
        raise ValueError(
            f"{checkpoint}: neither an Object Detection API nor a DeepLab checkpoint nor a slim "
            f"{config.model.backbone} one ({scope}/...); its first variables: "
            f"{', '.join(sorted(names)[:3])}"
        )
    claim_workdir(workdir, adopt=adopt_workdir)
    if checkpoints.latest_checkpoint(workdir):
        raise FileExistsError(
            f"{checkpoints.checkpoint_dir(workdir)} already holds a checkpoint; import into a "
            "new --workdir"
        )
    try:
        label_map = tasks.get_task(config).label_map(config)
    except (ValueError, OSError) as e:
        # A folder config whose folders are not here: export then needs --label_map.
        logging.warning("Not recording the label map (the config's classes are unknown: %s)", e)
        label_map = None
    model = tasks.get_task(config).build_model(config)
    if found:
        kind, _, load, what, model_class, needed = found[0]
        if not isinstance(model, model_class):
            raise ValueError(
                f"{checkpoint} is {what}; it needs {needed} config, not a {config.task} one"
            )
        report = load(model, checkpoint, moving_averages=use_moving_averages)
    else:
        report = slim_checkpoint.load_slim_checkpoint(
            model.backbone, checkpoint, use_moving_averages
        )
        kind = "slim"
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    manager = checkpoints.make_manager(tf.train.Checkpoint(model=model, step=step), workdir, 1)
    path = checkpoints.save(manager, 0)
    checkpoints.write_config(config, workdir)
    if label_map is not None:
        recorded_labels.record(workdir, label_map, "the config")
    skipped = {}
    for reason in report.skipped.values():
        skipped[reason] = skipped.get(reason, 0) + 1
    return {
        "source": checkpoint,
        "kind": kind,
        "checkpoint": path,
        "assigned": len(report.assigned),
        "labels": None if label_map is None else recorded_labels.labels_path(workdir),
        "moving_averages": len(report.averaged),
        "skipped": skipped,
    }


def main(argv):
    del argv
    from ondevice_vision.configs.checks import check_config

    check_config(FLAGS.config)
    result = import_checkpoint(
        FLAGS.config,
        FLAGS.checkpoint,
        FLAGS.workdir,
        FLAGS.use_moving_averages,
        FLAGS.adopt_workdir,
    )
    print(json.dumps(result))


def run():
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
