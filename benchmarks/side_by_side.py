"""Our training step against torchvision's on this machine, in alternating rounds; JSON output.

    make bench-torchvision                        # installs torch + torchvision, runs the default
    python benchmarks/side_by_side.py --torch_path=.venv/torchvision
    python benchmarks/side_by_side.py --task=detection --ours=xla:train.jit_compile=True

Contestants, batch 8 (`--batch_size`), one prepared batch fed again and again so that the model
alone is timed (forward, loss with anchor matching, backward, optimizer update):

- detection: our SSDLite-MobileNetV3-Large 320 (the COCO recipe, 90 classes, its training loop
  `Trainer._build_train_loop` with its L2 term, gradient norm and finite checks) against
  torchvision's `ssdlite320_mobilenet_v3_large(num_classes=91)` in train mode, given the same
  images and boxes (a batch of our COCO-folder pipeline over generated 640x480 JPEGs with 1-11 boxes each).
- segmentation: our LR-ASPP-MobileNetV3-Large on 512x512 crops against torchvision's
  `lraspp_mobilenet_v3_large` with softmax cross-entropy, both with 4 classes (our synthetic
  source's) and the same images and masks. Both sides use momentum SGD.

Each contestant lives in its own process (its own thread pools; torch is imported only in its
process, from `--torch_path`, so it is never a dependency of this package). The parent runs
`--rounds` rounds; in each, every contestant runs `--steps` steps in turn, the order rotating
from round to round, so a change in the machine's load hits all of them alike. The figure to
read is `ratio`: ours / torchvision per round, median over rounds.

`--ours=NAME:KEY=VALUE,KEY=VALUE` (repeatable) adds our step under config overrides, e.g. a lever
measured side by side with the default, which is always there (`env.NAME=VALUE` sets an
environment variable of that process instead, e.g. `env.TF_ENABLE_ONEDNN_OPTS=0` or
`env.TF_NUM_INTEROP_THREADS=1`); `--ours=NAME@PATH:` runs the
package of another checkout at PATH (the state before a change): `ratio_to_ours` is then the
variant's time over this checkout's, per round, median over rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("task", ["detection", "segmentation"], "detection and/or segmentation.")
flags.DEFINE_integer("rounds", 5, "Alternating rounds.")
flags.DEFINE_integer("steps", 3, "Training steps per contestant per round.")
flags.DEFINE_integer("batch_size", 8, "Batch size of every contestant.")
flags.DEFINE_integer("threads", 0, "Threads of each framework (0: its default, the core count).")
flags.DEFINE_multi_string(
    "ours",
    [],
    "NAME[@CHECKOUT]:KEY=VALUE,... our step with config overrides, or another checkout's "
    "package (beside this checkout's default).",
)
flags.DEFINE_string(
    "torch_path", ".venv/torchvision", "Folder with torch + torchvision (make bench-torchvision)."
)
flags.DEFINE_bool("torchvision", True, "Time torchvision's model too.")
# Internal: the contestant processes.
flags.DEFINE_enum("worker", "", ["", "ours", "torchvision"], "Run as a contestant process.")
flags.DEFINE_string("overrides", "", "ours worker: KEY=VALUE,... config overrides.")
flags.DEFINE_string("batch_file", "", "torchvision worker: the .npz batch written by ours.")

TAG = "@@ "  # protocol lines on a worker's stdout (libraries may print there too)


def _say(obj):
    print(TAG + json.dumps(obj), flush=True)


def _commands():
    """Yields each `run N` line of stdin until `quit`."""
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        yield int(words[1])


# ------------------------------------------------------------------------------------ ours
def _save_batch(path, task, images, labels):
    import numpy as np

    arrays = {"images": images.numpy()}
    if task == "detection":
        arrays["boxes"] = labels["gt_boxes"].numpy()
        arrays["classes"] = labels["gt_classes"].numpy()
    else:
        arrays["masks"] = labels["mask"].numpy()[..., 0]
    np.savez(path, **arrays)


def _ours_worker(task):
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    with tempfile.TemporaryDirectory() as tmp:
        from ours_step import ours_train_loop

        config, train_loop, batch, iterator = ours_train_loop(
            task, tmp, FLAGS.batch_size, FLAGS.overrides
        )
        if FLAGS.batch_file:
            _save_batch(FLAGS.batch_file, task, *batch)
        per_call = int(config.train.steps_per_loop) or 0
        start = time.perf_counter()
        train_loop(iterator, tf.constant(1, tf.int64))[0]["loss"].numpy()
        _say({"ready": True, "first_step_seconds": time.perf_counter() - start})
        for steps in _commands():
            calls = [per_call] * (steps // per_call) if per_call else [steps]
            calls += [steps - sum(calls)] if sum(calls) < steps else []
            start = time.perf_counter()
            for n in calls:
                means, _ = train_loop(iterator, tf.constant(n, tf.int64))
            loss = float(means["loss"].numpy())
            _say({"seconds_per_step": (time.perf_counter() - start) / steps, "loss": loss})


# ------------------------------------------------------------------------------ torchvision
def _torchvision_worker(task):
    import numpy as np
    import ours_step
    import torch
    import torchvision

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    data = np.load(FLAGS.batch_file)
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous() / 255.0
    _, _, h, w = images.shape
    if task == "detection":
        model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=91
        )
        targets = []
        for boxes, classes in zip(data["boxes"], data["classes"], strict=True):
            keep = classes >= 0
            ymin, xmin, ymax, xmax = boxes[keep].T
            xyxy = np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)
            xyxy = xyxy[(xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])]
            targets.append(
                {
                    "boxes": torch.from_numpy(xyxy.astype(np.float32)),
                    # torchvision's class 0 is the background; ours count from 0.
                    "labels": torch.from_numpy(classes[keep][: len(xyxy)].astype(np.int64) + 1),
                }
            )
        image_list = list(images)

        def loss_fn():
            return sum(model(image_list, targets).values())
    else:
        model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=ours_step.SEG_CLASSES
        )
        masks = torch.from_numpy(data["masks"].astype(np.int64))

        def loss_fn():
            logits = model(images)["out"]
            return torch.nn.functional.cross_entropy(logits, masks, ignore_index=255)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss

    start = time.perf_counter()
    step()
    _say({"ready": True, "first_step_seconds": time.perf_counter() - start})
    for steps in _commands():
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        _say({"seconds_per_step": (time.perf_counter() - start) / steps, "loss": float(loss)})


# ----------------------------------------------------------------------------------- parent
class _Contestant:
    def __init__(self, name, task, args, env=None):
        self.name = name
        cmd = [sys.executable, os.path.abspath(__file__), f"--task={task}", *args]
        cmd += [f"--batch_size={FLAGS.batch_size}", f"--threads={FLAGS.threads}"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.ready = None
        self.rounds = []

    def wait_ready(self):
        self.ready = self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG) :])
        raise RuntimeError(f"{self.name}: the process ended (exit {self.proc.wait()})")

    def run(self, steps):
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        self.rounds.append(self._read())

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def _load():
    return round(os.getloadavg()[0], 2)


def _compare(task, tmp):
    batch_file = os.path.join(tmp, f"{task}_batch.npz")
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ)
    variants = [("ours", "", root)]
    for spec in FLAGS.ours:
        name, _, overrides = spec.partition(":")
        name, _, checkout = name.partition("@")
        variants.append((f"ours/{name}", overrides, os.path.abspath(checkout or root)))
    contestants = []
    try:
        for i, (name, overrides, checkout) in enumerate(variants):
            items = [item for item in overrides.split(",") if item]
            # env.NAME=VALUE: the variant's environment (TF_ENABLE_ONEDNN_OPTS, TF_NUM_*_THREADS).
            env_items = [item[len("env.") :] for item in items if item.startswith("env.")]
            variables = dict(item.split("=", 1) for item in env_items)
            overrides = ",".join(item for item in items if not item.startswith("env."))
            args = ["--worker=ours", f"--overrides={overrides}"]
            args += [f"--batch_file={batch_file}"] if i == 0 else []
            # PYTHONPATH comes before the editable install: the package of `checkout` runs.
            ours_env = {**env, **variables, "PYTHONPATH": os.pathsep.join([here, checkout])}
            contestants.append(_Contestant(name, task, args, ours_env))
        # Ours build their models and take a first step at the same time; torchvision's starts
        # once the first of ours has written the batch file.
        if FLAGS.torchvision:
            contestants[0].wait_ready()
            torch_path = os.path.abspath(FLAGS.torch_path)
            torch_env = {**env, "PYTHONPATH": os.pathsep.join([torch_path, here])}
            args = ["--worker=torchvision", f"--batch_file={batch_file}"]
            contestants.append(_Contestant("torchvision", task, args, torch_env))
        for c in contestants:
            if c.ready is None:
                c.wait_ready()
        loads = [_load()]
        for r in range(FLAGS.rounds):
            shift = r % len(contestants)
            for c in contestants[shift:] + contestants[:shift]:
                c.run(FLAGS.steps)
                print(f"round {r + 1} {c.name}: {c.rounds[-1]}", file=sys.stderr, flush=True)
            loads.append(_load())
    finally:
        for c in contestants:
            c.close()
    result = {"task": task, "load_average": loads, "contestants": {}}
    for c in contestants:
        times = [r["seconds_per_step"] for r in c.rounds]
        result["contestants"][c.name] = {
            "first_step_seconds": round(c.ready["first_step_seconds"], 2),
            "seconds_per_step": [round(t, 3) for t in times],
            "median_seconds_per_step": round(statistics.median(times), 3),
            "last_loss": round(c.rounds[-1]["loss"], 4),
        }
    if FLAGS.torchvision:
        theirs = [r["seconds_per_step"] for r in contestants[-1].rounds]
        for c in contestants[:-1]:
            ratios = [r["seconds_per_step"] / t for r, t in zip(c.rounds, theirs, strict=True)]
            entry = result["contestants"][c.name]
            entry["ratio_to_torchvision"] = [round(x, 3) for x in ratios]
            entry["ratio"] = round(statistics.median(ratios), 3)
    base = [r["seconds_per_step"] for r in contestants[0].rounds]
    for c in contestants[1 : len(variants)]:
        ratios = [r["seconds_per_step"] / b for r, b in zip(c.rounds, base, strict=True)]
        result["contestants"][c.name]["ratio_to_ours"] = round(statistics.median(ratios), 3)
    return result


def main(argv):
    del argv
    if FLAGS.worker:
        (task,) = FLAGS.task
        {"ours": _ours_worker, "torchvision": _torchvision_worker}[FLAGS.worker](task)
        return
    results = {"batch_size": FLAGS.batch_size, "steps_per_round": FLAGS.steps, "tasks": []}
    with tempfile.TemporaryDirectory() as tmp:
        for task in FLAGS.task:
            results["tasks"].append(_compare(task, tmp))
            print(json.dumps(results["tasks"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
