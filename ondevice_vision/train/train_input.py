"""The training loop's input: one tf.data pipeline per worker, split over its replicas.

Two ways to feed replicas, because tf.distribute's distributed iterators cannot be saved in a
checkpoint:

- One input worker (one device, or several GPUs in one process): a plain tf.data iterator
  yields the worker's batch (per-replica batch x local replicas), which is sliced per replica.
  The iterator goes into the checkpoint, so a restarted run continues at the same data position
  (shuffle buffer and all; the random augmentation stream is not part of tf.data's state).
- Several workers or a TPU: `distribute_datasets_from_function`, each worker reading its own
  shard (InputContext). Its position is not checkpointed; a restarted run reshuffles with a seed
  that depends on the restart step instead of replaying the first batches.

Either way global batch k holds the same examples when shuffling and augmentation are off, so a
two-worker run and a one-worker run with the same global batch see the same data.

With `train.data_service` the pipeline this process builds is sent to a tf.data service
dispatcher and its workers (other machines) run it; this process only receives finished batches.
The position in such a stream cannot be saved, so a restart reshuffles as in the multi-worker case.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from absl import logging

from ondevice_vision.train.strategy import local_replicas, num_input_workers

# build(batch_size, input_context) -> a repeated dataset of (images, labels) batches.
BuildFn = Callable[[int, tf.distribute.InputContext], tf.data.Dataset]

DATA_SERVICE_SHARDING = {
    "off": tf.data.experimental.service.ShardingPolicy.OFF,
    "dynamic": tf.data.experimental.service.ShardingPolicy.DYNAMIC,
}


def check_data_service(address: str, sharding: str) -> None:
    if address and not address.startswith(("grpc://", "grpc+local://")):
        raise ValueError(f"train.data_service must look like grpc://HOST:PORT, got {address!r}")
    if sharding not in DATA_SERVICE_SHARDING:
        raise ValueError(
            f"train.data_service_sharding must be one of {sorted(DATA_SERVICE_SHARDING)}, "
            f"got {sharding!r}"
        )


def _options() -> tf.data.Options:
    options = tf.data.Options()
    # Random augmentation ops carry state tf.data cannot save; without this the first save of the
    # iterator fails. Their stream simply starts afresh after a restore.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return options


def check_not_empty(dataset: tf.data.Dataset, what: str) -> tf.data.Dataset:
    """Fails at once on a pipeline with nothing in it, instead of at the first train step."""
    if int(dataset.cardinality()) == 0:
        raise ValueError(
            f"{what} is empty: the data source (after filtering and sharding over workers) has "
            "no examples, or fewer than one batch"
        )
    return dataset


class TrainInput:
    """Makes the iterator the train loop consumes, and the per-replica batches from its items."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        build: BuildFn,
        global_batch: int,
        data_service: str = "",
        data_service_sharding: str = "off",
    ):
        check_data_service(data_service, data_service_sharding)
        self.data_service = data_service
        self.data_service_sharding = data_service_sharding
        self.strategy = strategy
        self.global_batch = global_batch
        self.per_replica_batch = global_batch // strategy.num_replicas_in_sync
        self.local_replicas = local_replicas(strategy)
        self.workers = num_input_workers(strategy)
        self.checkpointable = self.workers == 1 and not isinstance(
            strategy, tf.distribute.TPUStrategy
        )
        # Whether the iterator's position can go into a checkpoint.
        self.saves_position = self.checkpointable and not data_service
        self._build = build
        self.element_spec = None  # of one replica's (images, labels), once a dataset is built

    def make_iterator(self):
        """A tf.data iterator (checkpointable) or a distributed iterator (several workers)."""
        if self.checkpointable:
            context = tf.distribute.InputContext(
                num_input_pipelines=1,
                input_pipeline_id=0,
                num_replicas_in_sync=self.strategy.num_replicas_in_sync,
            )
            # The one worker reads whole global batches and slices them per replica.
            dataset = self._build(self.global_batch, context)
            dataset = check_not_empty(dataset, "the training input")
            self.element_spec = dataset.element_spec
            return iter(self._via_service(dataset.with_options(_options())))

        def dataset_fn(context):
            dataset = self._build(context.get_per_replica_batch_size(self.global_batch), context)
            what = f"the training input of worker {context.input_pipeline_id}"
            self.element_spec = dataset.element_spec
            return self._via_service(check_not_empty(dataset, what).with_options(_options()))

        logging.info(
            "%d input workers: each reads its shard; the data position is not checkpointed",
            self.workers,
        )
        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _via_service(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        if not self.data_service:
            return dataset
        logging.info(
            "Input from the tf.data service at %s (sharding %s)",
            self.data_service,
            self.data_service_sharding,
        )
        return dataset.apply(
            tf.data.experimental.service.distribute(
                processing_mode=DATA_SERVICE_SHARDING[self.data_service_sharding],
                service=self.data_service,
            )
        )

    def next_batch(self, iterator):
        """The next (images, labels), per replica; call inside the train tf.function."""
        batch = next(iterator)
        if not self.checkpointable or self.local_replicas == 1:
            return batch
        size = self.per_replica_batch

        def replica_slice(context):
            # One worker: replica ids are the local indices 0..local_replicas-1.
            start = context.replica_id_in_sync_group * size
            return tf.nest.map_structure(lambda t: t[start : start + size], batch)

        return self.strategy.experimental_distribute_values_from_function(replica_slice)
