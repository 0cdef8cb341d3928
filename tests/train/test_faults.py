import os
import random
import signal
import subprocess

import numpy as np
import tensorflow as tf

from ondevice_vision import checkpoints as checkpointing
from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.tasks import detection as detection_task
from ondevice_vision.train import strategy, train_input
from tests.helpers import train_cli

TOTAL = 30
NAN_STEP = 3


def _listed(workdir):
    return [os.path.basename(p) for p in checkpointing.listed_checkpoints(str(workdir))]


def _latest_step(workdir):
    latest = checkpointing.latest_checkpoint(str(workdir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _assert_finite_weights(path):
    for name, value in train_cli.model_weights(path).items():
        assert np.isfinite(value).all(), name


def test_nan_stop_then_sigterm_then_sigkill_then_resume_to_the_end(tmp_path):
    """One run through every fault, each restart resuming where the last one left off."""
    workdir = tmp_path / "run"
    common = (f"--config.train.total_steps={TOTAL}", "--config.train.log_every_steps=1")
    config = train_cli.SEGMENTATION_SMOKE

    # 1. A NaN loss at step 3 stops the run, naming the step; the step-2 checkpoint stays.
    # `ondevice-train`'s main in this process (a fresh one would only add its start-up).
    exit_message = train_cli.run_in_process(
        workdir,
        *common,
        "--config.train.checkpoint_every_steps=2",
        nan_at_step=NAN_STEP,
        config=config,
    )
    assert exit_message.startswith("ERROR: ")  # exit status 1, the message on stderr
    assert f"Non-finite loss or gradient at step {NAN_STEP}; stopped without saving" in exit_message
    assert "ckpt-2" in exit_message
    assert _listed(workdir) == ["ckpt-2"]
    _assert_finite_weights(str(workdir / "checkpoints" / "ckpt-2"))

    # 2. Resumes from step 2 (with the data position); SIGTERM: checkpoint, exit status 0.
    process = train_cli.start(workdir, *common, log_path=tmp_path / "2_sigterm.log", config=config)
    train_cli.wait_for(train_cli.log_contains(process, f"step  4/{TOTAL}"), process)
    process.send_signal(signal.SIGTERM)
    code, output = train_cli.finish(process, timeout=120)
    assert code == 0, output[-3000:]
    assert "Resumed from" in output and "ckpt-2" in output
    assert "Restored the input pipeline position" in output
    result = train_cli.result_json(output)
    stopped = result["step"]
    assert result["preempted"] and 4 <= stopped < TOTAL
    assert f"Stopped at step {stopped} after a signal" in output
    assert _latest_step(workdir) == stopped

    # 3. Saving after every step, killed at a random moment once it has saved one more.
    process = train_cli.start(
        workdir,
        *common,
        "--config.train.checkpoint_every_steps=1",
        log_path=tmp_path / "3_sigkill.log",
        config=config,
    )
    train_cli.wait_for(lambda: _latest_step(workdir) > stopped, process, poll=0.05)
    random_delay = random.uniform(0.0, 2.0)
    try:
        process.wait(timeout=random_delay)
    except subprocess.TimeoutExpired:  # still running, as intended
        pass
    process.send_signal(signal.SIGKILL)
    code, output = train_cli.finish(process)
    assert code == -signal.SIGKILL, f"finished before the kill ({random_delay:.2f}s):\n{output}"
    killed_at = _latest_step(workdir)
    assert stopped < killed_at < TOTAL - 3
    for name in _listed(workdir):  # the index only ever lists complete checkpoints
        state = train_cli.read_checkpoint(str(workdir / "checkpoints" / name))
        assert int(state["step/.ATTRIBUTES/VARIABLE_VALUE"]) == int(name.split("-")[1])
        assert state["data/.ATTRIBUTES/ITERATOR_STATE"] is None  # present, a variant

    # 4. Resumes from the last listed checkpoint and finishes; a NaN step is skipped this time.
    skip_at = killed_at + 2
    code, output = train_cli.run(
        workdir,
        *common,
        "--config.train.checkpoint_every_steps=10",
        "--config.train.nan_policy=skip",
        nan_at_step=skip_at,
        log_path=tmp_path / "4_resume.log",
        config=config,
    )
    assert code == 0, output[-3000:]
    assert f"ckpt-{killed_at}" in output and "Resumed from" in output
    assert f"Non-finite loss or gradient at step {skip_at}" in output
    assert train_cli.result_json(output)["step"] == TOTAL
    final = train_cli.read_checkpoint(str(workdir / "checkpoints" / f"ckpt-{TOTAL}"))
    assert int(final["step/.ATTRIBUTES/VARIABLE_VALUE"]) == TOTAL
    # Optimizer state went through every restart: its update count is the global step less the
    # one update skipped in run 4 (were it not restored, it would count run 4's steps only).
    assert int(final["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == TOTAL - 1
    _assert_finite_weights(str(workdir / "checkpoints" / f"ckpt-{TOTAL}"))
    leftovers = [n for n in os.listdir(workdir / "checkpoints") if "_temp" in n]
    assert not leftovers


def _smoke_config():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.input_size = (32, 32)
    config.data.num_train = 7
    config.train.shuffle_buffer = 5
    return config


def test_data_iterator_position_is_restored_from_a_checkpoint(tmp_path):
    """With augmentation on (its random ops cannot be saved, and must not stop the save)."""
    config = _smoke_config()
    one = strategy.create_strategy("one_device")

    def build(batch_size, context):
        return detection_task.build_dataset(config, "train", batch_size, input_context=context)[0]

    data = train_input.TrainInput(one, build, global_batch=2)
    assert data.checkpointable
    iterator = data.make_iterator()
    for _ in range(3):
        next(iterator)
    checkpoint = tf.train.Checkpoint(data=iterator)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    ahead = [next(iterator)[1]["image_id"].numpy().tolist() for _ in range(4)]

    fresh = train_input.TrainInput(one, build, global_batch=2).make_iterator()
    tf.train.Checkpoint(data=fresh).read(path).assert_consumed()
    assert [next(fresh)[1]["image_id"].numpy().tolist() for _ in range(4)] == ahead
    restarted = train_input.TrainInput(one, build, global_batch=2).make_iterator()
    assert [next(restarted)[1]["image_id"].numpy().tolist() for _ in range(4)] != ahead


def test_tidy_removes_only_what_a_killed_save_leaves(tmp_path):
    workdir = str(tmp_path)
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = checkpointing.make_manager(checkpoint, workdir, keep=3)
    for step in (1, 2):
        checkpointing.save(manager, step)
    directory = tmp_path / "checkpoints"
    # What a kill leaves: a temp dir mid-write, and a finished save the index never listed.
    (directory / "ckpt-3_temp").mkdir()
    (directory / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    for suffix in (".index", ".data-00000-of-00001"):
        (directory / f"ckpt-3{suffix}").write_bytes(b"partial")
    removed = checkpointing.tidy_checkpoint_dir(workdir)["removed"]
    assert sorted(os.path.basename(p) for p in removed) == [
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
        "ckpt-3_temp",
    ]
    assert sorted(os.listdir(directory)) == sorted(
        ["checkpoint"]
        + [f"ckpt-{s}{x}" for s in (1, 2) for x in (".index", ".data-00000-of-00001")]
    )
    assert checkpointing.latest_checkpoint(workdir).endswith("ckpt-2")
    assert checkpointing.has_entry(checkpointing.latest_checkpoint(workdir), "v")
    assert not checkpointing.has_entry(checkpointing.latest_checkpoint(workdir), "data")


def test_sigterm_lands_within_a_few_steps_whatever_steps_per_loop(tmp_path):
    """A preemption notice gives ~30 s: the stop may not wait for a 20-step tf.function call."""
    workdir = tmp_path / "run"
    process = train_cli.start(
        workdir,
        "--config.train.total_steps=60",
        "--config.train.log_every_steps=20",
        "--config.train.steps_per_loop=20",
        "--config.train.checkpoint_every_steps=60",
        log_path=tmp_path / "sigterm.log",
        config=train_cli.SEGMENTATION_SMOKE,
    )
    train_cli.wait_for(train_cli.log_contains(process, "step 20/60"), process)
    process.send_signal(signal.SIGTERM)
    code, output = train_cli.finish(process, timeout=120)
    assert code == 0, output[-3000:]
    stopped = _latest_step(workdir)
    # The old loop finished its call first and so stopped exactly at step 40.
    assert 20 <= stopped <= 24, output[-3000:]
    assert f"Stopped at step {stopped} after a signal" in output
