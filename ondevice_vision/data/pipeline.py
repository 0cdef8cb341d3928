"""The part of every input pipeline that does not depend on the task: shard, shuffle, repeat.

    source = prepare_source(source, training=True, shuffle_buffer=1000, seed=0,
                            input_context=context)

Sharding comes first so each input worker reads a disjoint part of the (fixed-order) source;
shuffling comes before repeating so every epoch is a full pass in a new order.
"""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision.data import decoded_cache, image_decode


def prepare_source(
    source: tf.data.Dataset,
    training: bool,
    shuffle_buffer: int = 0,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool | None = None,
    max_examples: int = 0,
    decoded_cache_dir: str = "",
    decode=None,
    cache_key: str = "",
) -> tf.data.Dataset:
    """Decoded examples -> this worker's shard, shuffled and repeated when training.

    `repeat` defaults to `training`; `max_examples` (> 0) cuts a non-repeated pipeline short,
    as `eval.max_images` does. `decoded_cache_dir`: cache the shard there (after `decode`, a
    function making encoded examples decoded) before shuffling, in files named by `cache_key`
    (the source's fingerprint); see data/decoded_cache.py.
    """
    if input_context is not None and input_context.num_input_pipelines > 1:
        source = source.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if decoded_cache_dir:
        if decode is not None:
            source = image_decode.map_skipping_undecodable(
                source,
                decode,
                image_decode.example_name,
                "training images",
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        name = decoded_cache.cache_name("train" if training else "eval", input_context)
        source = decoded_cache.cache_decoded(source, decoded_cache_dir, name, cache_key)
    if training and shuffle_buffer:
        source = source.shuffle(shuffle_buffer, seed=seed)
    if training if repeat is None else repeat:
        return source.repeat()
    if max_examples:
        source = source.take(max_examples)
    return source


def prepare_task_source(source, config, split: str, input_context=None, repeat=None, decode=None):
    """`prepare_source` with a task config's settings (train.shuffle_buffer, train.seed,
    eval.max_images, data.decoded_cache for training) for `split` ("train" shuffles and
    repeats)."""
    cache_dir = config.data.get("decoded_cache", "") if split == "train" else ""
    return prepare_source(
        source,
        split == "train",
        shuffle_buffer=config.train.shuffle_buffer,
        seed=config.train.seed,
        input_context=input_context,
        repeat=repeat,
        max_examples=config.eval.max_images,
        decoded_cache_dir=cache_dir,
        decode=decode,
        cache_key=decoded_cache.source_fingerprint(config.data) if cache_dir else "",
    )
