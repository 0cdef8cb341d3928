"""Where one training step's time goes, by kind of operation: TensorFlow's profiler over a few
steps of the trainer's own loop on one prepared batch (benchmarks/ours_step.py), JSON out.

    python benchmarks/profile_train_step.py --task=detection --steps=3
    python benchmarks/profile_train_step.py --task=detection --overrides=train.weight_decay=0.0

Every op the executor ran is put in one group by its type and name scope (the trainer names the
scopes `losses`, `l2`, `grad_norm` and `optimizer`; backward ops sit under `gradient_tape/`). The
time of a group is the sum of its ops' durations over both executor threads, divided by the
steps: with two threads running ops side by side the groups add up to more than the wall time of
a step (`wall_seconds_per_step`), and the profiler itself adds to both (compare `share`, not
milliseconds, with an unprofiled step).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "detection", ["detection", "segmentation"], "Which model.")
flags.DEFINE_integer("steps", 3, "Profiled steps (after two warm-up steps).")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_string("overrides", "", "KEY=VALUE,... config overrides (side_by_side.py's).")
flags.DEFINE_integer("top", 12, "Also list this many single ops with the most time.")

# (group, test on "name:type"), first match wins; "bwd" groups are ops under gradient_tape/.
_GROUPS = (
    ("optimizer update", lambda n, t: "/optimizer/" in n),
    ("gradient norm", lambda n, t: "/grad_norm/" in n),
    ("L2 term", lambda n, t: "/l2/" in n),
    ("loss with matching", lambda n, t: "/losses/" in n),
    ("batch norm", lambda n, t: re.search(r"/(moments|batchnorm)/|FusedBatchNorm", n + t)),
    ("squeeze-excite", lambda n, t: "squeeze_excite" in n),
    ("depthwise conv", lambda n, t: t.startswith("DepthwiseConv2dNative")),
    ("1x1 conv (and the 3x3 stem)", lambda n, t: "Conv2D" in t),
    ("hard-swish / ReLU", lambda n, t: re.search(r"_act(_\d+)?/|hard_swish|relu", n.lower())),
    ("resize / concat / reshape", lambda n, t: re.search(r"resize|concat|reshape", n.lower())),
)
# Ops that only hold others (their time is their body's) and the executor's own spans.
_CONTAINERS = {"While", "If", "StatelessIf", "StatefulPartitionedCall", "PartitionedCall"}


def group_of(name: str, op_type: str) -> str:
    direction = "bwd" if "gradient_tape/" in name else "fwd"
    for group, test in _GROUPS:
        if test(name, op_type):
            if group in ("depthwise conv", "1x1 conv (and the 3x3 stem)", "batch norm"):
                return f"{group} {direction}"
            if group in ("squeeze-excite", "hard-swish / ReLU", "resize / concat / reshape"):
                return f"{group} {direction}"
            return group
    return f"other {direction}"


def op_times(xspace_path: str):
    """{(name, type): summed picoseconds} of the op kernels the executor threads ran."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                name, sep, op_type = label.rpartition(":")
                if not sep or "::" in label or op_type in _CONTAINERS:
                    continue
                times[(name, op_type)] += event.duration_ps
    return times


def main(argv):
    del argv
    import tensorflow as tf
    from ours_step import ours_train_loop

    with tempfile.TemporaryDirectory() as tmp:
        _, train_loop, _, iterator = ours_train_loop(
            FLAGS.task, tmp, FLAGS.batch_size, FLAGS.overrides
        )
        steps = tf.constant(FLAGS.steps, tf.int64)
        train_loop(iterator, tf.constant(2, tf.int64))[0]["loss"].numpy()
        start = time.perf_counter()
        train_loop(iterator, steps)[0]["loss"].numpy()
        unprofiled = (time.perf_counter() - start) / FLAGS.steps
        logdir = os.path.join(tmp, "profile")
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        train_loop(iterator, steps)[0]["loss"].numpy()
        profiled = (time.perf_counter() - start) / FLAGS.steps
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        times = op_times(path)
    groups = collections.Counter()
    for (name, op_type), ps in times.items():
        groups[group_of(name, op_type)] += ps
    total = sum(groups.values())
    result = {
        "task": FLAGS.task,
        "batch_size": FLAGS.batch_size,
        "overrides": FLAGS.overrides,
        "load_average": round(os.getloadavg()[0], 2),
        "wall_seconds_per_step": round(unprofiled, 3),
        "wall_seconds_per_step_profiled": round(profiled, 3),
        "op_ms_per_step": round(total / 1e9 / FLAGS.steps, 1),
        "groups": {
            g: {"ms_per_step": round(ps / 1e9 / FLAGS.steps, 1), "share": round(ps / total, 3)}
            for g, ps in groups.most_common()
        },
        "top_ops": [
            {"op": f"{n}:{t}"[-140:], "ms_per_step": round(ps / 1e9 / FLAGS.steps, 1)}
            for (n, t), ps in times.most_common(FLAGS.top)
        ],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
