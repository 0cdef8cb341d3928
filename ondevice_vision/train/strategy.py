"""tf.distribute strategies by name, and where this process sits among the workers."""

from __future__ import annotations

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def create_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy when several GPUs are visible, else one device.

    `multi_worker_mirrored` reads the cluster from the TF_CONFIG environment variable (every
    worker runs the same command with its own TF_CONFIG); `tpu` resolves `tpu` ("local" on a
    Cloud TPU VM, a TPU name, or grpc://host:8470) with TPUClusterResolver.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if name != "tpu" and tpu:
        raise ValueError(f"--tpu={tpu} is only used with --strategy=tpu, not {name}")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        # Without GPUs: every logical CPU device (one unless the process split the CPU).
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    logging.info("TPU devices: %s", tf.config.list_logical_devices("TPU"))
    return tf.distribute.TPUStrategy(resolver)


def chief_and_index(cluster: dict, task_type: str | None, task_id: int | None) -> tuple[bool, int]:
    """(is_chief, index among the training tasks) from a TF_CONFIG-style cluster spec.

    The chief is the "chief" task if the cluster has one, else worker 0 (TF's convention).
    Indices follow tf.distribute's input pipeline ids: the chief is 0, workers come after it.
    """
    if not cluster or task_type is None:
        return True, 0
    task_id = int(task_id or 0)
    has_chief = "chief" in cluster
    if task_type == "chief":
        return True, 0
    if task_type == "worker":
        return (not has_chief and task_id == 0), task_id + (1 if has_chief else 0)
    raise ValueError(
        f"TF_CONFIG task type {task_type!r} does not train; expected 'chief' or 'worker'"
    )


def worker_info(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is_chief, worker index). Only the chief writes checkpoints, summaries and exports."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True, 0  # one Python process drives every TPU host
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True, 0
    return chief_and_index(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas driven by this process (its GPUs, or its TPU host's cores)."""
    return len(strategy.extended.worker_devices)


def num_input_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes (or TPU hosts) that each run an input pipeline."""
    return max(1, strategy.num_replicas_in_sync // local_replicas(strategy))
