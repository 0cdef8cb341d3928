import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.tasks import detection as detection_task
from ondevice_vision.train import strategy, train_input
from tests.helpers import train_cli

# Plain SGD (momentum 0) at a small rate: the update is the learning rate times the gradient, so
# two workers that sum the per-example gradients in another order than one device move the weights
# by that rounding alone (~1e-7 relative), and small steps keep it from growing. Adam divides
# every gradient by the root of its running square, which turns the rounding differences of
# near-zero gradients into full-size steps: with Adam (rate 3e-3) the step-4 losses came out
# 6.9e-4 apart on an AMD EPYC (AVX-512) against 1.4e-6 on an Intel Xeon, the same code; and so
# does a large SGD rate (0.1: the loss rose at step 2, and the step-8 losses were 8.6% apart).
#
# Measured (Intel Xeon, these settings, one device against the two workers without a signal,
# all 8 steps; with ONEDNN_MAX_CPU_ISA=AVX2 the runs were bit-identical to the default kernels):
# loss at most 8.9e-7 relative; gradient norm at most 5.2e-6, except 3.7e-4 at step 7 (one
# step's gradient, not an accumulated drift: step 8 agreed to 1.8e-6); weights at most 1.0e-5
# absolute (a BN moving mean / variance; median 1.2e-7). Tolerances: those maxima times about ten (the
# gradient norm's: 27x its worst step), far below what a wrong normalisation or a gradient
# summed twice would give (tens of percent, 100% in the gradient norm).
SGD = (
    "--config.train.optimizer=momentum",
    "--config.train.momentum=0.0",
    "--config.train.base_learning_rate=3e-4",
)
LOSS_RTOL = 1e-5
GRAD_NORM_RTOL = 1e-2
WEIGHT_ATOL = 1e-4

GLOBAL_BATCH = 4
STEPS = 8
COMMON = (
    *train_cli.DETERMINISTIC_DATA,
    *SGD,
    "--config.train.sync_batch_norm=True",
    f"--config.train.batch_size={GLOBAL_BATCH}",
    f"--config.train.total_steps={STEPS}",
    "--config.train.log_every_steps=1",
    "--deterministic",
)


def test_two_workers_train_like_one_device_and_stop_together(tmp_path):
    """A global batch of 4 on one replica, and on two workers with one replica each.

    The second worker gets SIGTERM mid-run: both workers stop at the same step, the chief saves.
    """
    ports = train_cli.free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    multi = tmp_path / "two_workers"
    reference_run = train_cli.start(
        tmp_path / "one_device",
        "--strategy=one_device",
        *COMMON,
        "--config.train.checkpoint_every_steps=1",
        f"--config.train.keep_checkpoints={STEPS}",
    )
    workers = [
        train_cli.start(
            multi,
            "--strategy=multi_worker_mirrored",
            *COMMON,
            "--config.train.checkpoint_every_steps=2",
            log_path=tmp_path / f"worker{index}.log",
            tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}},
        )
        for index in range(2)
    ]
    # Three processes trace their train steps at once before step 3: minutes on a busy machine.
    train_cli.wait_for(
        train_cli.log_contains(workers[0], f"step 3/{STEPS}"), workers[0], timeout=900, poll=0.1
    )
    workers[1].send_signal(signal.SIGTERM)
    outputs = {}
    for name, process in [
        ("one_device", reference_run),
        ("worker0", workers[0]),
        ("worker1", workers[1]),
    ]:
        code, outputs[name] = train_cli.finish(process)
        assert code == 0, f"{name}:\n{outputs[name][-4000:]}"

    assert (
        "2 replicas on 2 input workers, per-replica batch 2, global batch 4" in outputs["worker1"]
    )
    assert (
        "1 replicas on 1 input workers, per-replica batch 4, global batch 4"
        in outputs["one_device"]
    )
    results = [train_cli.result_json(outputs[f"worker{i}"]) for i in range(2)]
    stopped = results[0]["step"]
    assert results[0]["preempted"] and results[1]["preempted"]
    assert results[1]["step"] == stopped and 3 <= stopped < STEPS
    assert "Signal 15 received" in outputs["worker1"] and "Signal 15" not in outputs["worker0"]

    reference = train_cli.scalars(tmp_path / "one_device", "loss/loss")
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert len(set(np.round(list(reference.values()), 3))) == STEPS  # the weights do change
    losses = train_cli.scalars(multi, "loss/loss")
    assert sorted(losses) == list(range(1, stopped + 1))
    np.testing.assert_allclose(
        [losses[s] for s in losses], [reference[s] for s in losses], rtol=LOSS_RTOL
    )
    reference_norms = train_cli.scalars(tmp_path / "one_device", "grad_norm")
    norms = train_cli.scalars(multi, "grad_norm")
    np.testing.assert_allclose(
        [norms[s] for s in losses], [reference_norms[s] for s in losses], rtol=GRAD_NORM_RTOL
    )
    reference_weights = train_cli.model_weights(
        str(tmp_path / "one_device" / "checkpoints" / f"ckpt-{stopped}")
    )
    weights = train_cli.model_weights(str(multi / "checkpoints" / f"ckpt-{stopped}"))
    assert weights.keys() == reference_weights.keys()
    for key, value in weights.items():
        np.testing.assert_allclose(value, reference_weights[key], atol=WEIGHT_ATOL, err_msg=key)

    # Only the chief wrote: one checkpoint directory, the other worker's scratch copy is gone.
    # train.lock: the chief's workdir lock (the other worker writes nothing here).
    # labels.json: the run's label map (export and eval read it); .ondevice_workdir: the
    # workdir's owner marker (workdir_owner.py).
    assert sorted(os.listdir(multi)) == [
        ".ondevice_workdir",
        "checkpoints",
        "config.json",
        "labels.json",
        "train",
        "train.lock",
    ]
    saved = sorted({2, stopped})
    assert sorted(os.listdir(multi / "checkpoints")) == sorted(
        ["checkpoint"]
        + [f"ckpt-{s}.{ext}" for s in saved for ext in ("index", "data-00000-of-00001")]
    )
    assert f"two_workers/checkpoints/ckpt-{stopped}" in outputs["worker0"]
    assert ".worker_1_scratch" in outputs["worker1"]


@pytest.mark.parametrize(
    "cluster,task_type,task_id,expected",
    [
        ({}, None, None, (True, 0)),
        ({"worker": ["a", "b"]}, "worker", 0, (True, 0)),
        ({"worker": ["a", "b"]}, "worker", 1, (False, 1)),
        ({"chief": ["c"], "worker": ["a", "b"]}, "chief", 0, (True, 0)),
        ({"chief": ["c"], "worker": ["a", "b"]}, "worker", 0, (False, 1)),
        ({"chief": ["c"], "worker": ["a", "b"]}, "worker", 1, (False, 2)),
    ],
)
def test_chief_and_worker_index_follow_tf_config_conventions(cluster, task_type, task_id, expected):
    assert strategy.chief_and_index(cluster, task_type, task_id) == expected


def test_evaluator_and_ps_tasks_are_rejected():
    with pytest.raises(ValueError, match="'ps'"):
        strategy.chief_and_index({"worker": ["a"], "ps": ["p"]}, "ps", 0)


def test_create_strategy_names():
    with pytest.raises(ValueError, match="--strategy"):
        strategy.create_strategy("horovod")
    with pytest.raises(ValueError, match="--tpu"):
        strategy.create_strategy("one_device", tpu="local")
    one = strategy.create_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert strategy.worker_info(one) == (True, 0)
    assert strategy.local_replicas(one) == 1 and strategy.num_input_workers(one) == 1


def test_worker_shards_make_up_the_one_worker_batches():
    """Global batch k holds the same examples however many input pipelines read the data."""
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.data.augment, config.train.shuffle_buffer = False, 1
    config.data.num_train = 12
    config.model.input_size = (32, 32)

    def image_ids(batch_size, pipelines, index, batches):
        context = tf.distribute.InputContext(pipelines, index, pipelines)
        ds, _ = detection_task.build_dataset(config, "train", batch_size, input_context=context)
        return [b[1]["image_id"].numpy().tolist() for b in ds.take(batches)]

    single = image_ids(4, 1, 0, 4)
    shards = [image_ids(2, 2, i, 4) for i in range(2)]
    for k in range(4):
        assert sorted(shards[0][k] + shards[1][k]) == sorted(single[k])
    assert single[0] == [0, 1, 2, 3] and single[3] == [0, 1, 2, 3]  # 12 examples, then repeat


def test_empty_shard_fails_with_a_clear_error():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.data.num_train = 1
    context = tf.distribute.InputContext(2, 1, 2)
    ds, _ = detection_task.build_dataset(config, "train", 1, input_context=context)
    with pytest.raises(ValueError, match="worker 1 is empty"):
        train_input.check_not_empty(ds, "the training input of worker 1")


_MIRRORED_SPLIT = """
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ondevice_vision.train import strategy, train_input
mirrored = strategy.create_strategy("mirrored")
def build(batch_size, context):
    ds = tf.data.Dataset.range(1000).map(lambda i: (tf.fill([2], i), {"id": i}))
    return ds.batch(batch_size, drop_remainder=True).repeat()
data = train_input.TrainInput(mirrored, build, global_batch=6)
iterator = data.make_iterator()
@tf.function
def step(iterator):
    images, labels = data.next_batch(iterator)
    return mirrored.run(lambda x, y: (x[:, 0], y["id"]), args=(images, labels))
batches = [[mirrored.experimental_local_results(t) for t in step(iterator)] for _ in range(2)]

from ondevice_vision.configs import common
from ondevice_vision.train import optimizer
tc = common.train_config()
tc.update(optimizer="momentum", momentum=0.0, schedule="constant", base_learning_rate=0.5)
with mirrored.scope():
    variable = tf.Variable([0.0])
    opt = optimizer.build_optimizer(tc)
    opt.build([variable])
@tf.function
def apply():  # each replica passes the gradient already summed over replicas
    mirrored.run(lambda: opt.apply([tf.constant([1.0])], [variable]))
apply()
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "checkpointable": data.checkpointable,
    "batches": [[[r.numpy().tolist() for r in t] for t in b] for b in batches],
    "update": [v.numpy().tolist() for v in mirrored.experimental_local_results(variable)],
}))
"""


def test_mirrored_replicas_slice_one_pipeline_and_apply_summed_gradients_once():
    """Several replicas in one process share one checkpointable pipeline, sliced per replica."""
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SPLIT],
        cwd=train_cli.ROOT,
        env=train_cli.environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = train_cli.result_json(result.stdout)
    assert out["replicas"] == 2 and out["checkpointable"]
    # Applied once per replica copy, not summed again (Keras' default would give -1.0).
    assert out["update"] == [[-0.5], [-0.5]]
    for k, (images, ids) in enumerate(out["batches"]):
        assert images == ids == [[6 * k, 6 * k + 1, 6 * k + 2], [6 * k + 3, 6 * k + 4, 6 * k + 5]]
