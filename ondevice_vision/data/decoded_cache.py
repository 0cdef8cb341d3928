"""`data.decoded_cache`: decoded training images kept on local disk after the first epoch.

Decoding is most of what an input pipeline costs per image (a 640x480 JPEG ~2 ms of one core, a
1024x2048 Cityscapes PNG ~40 ms), and a recipe decodes every file hundreds of times (COCO: 400k
steps x 512 = 1,700 epochs; Cityscapes: 300k x 16 = 1,600). With this option the first epoch
decodes and writes raw pixels (tf.data's file cache), later epochs read them back; the random
crops, flips and scales still happen per example after it, so the augmentation is unchanged.

Cost: raw pixels take H x W x 3 bytes per image (COCO train ~110 GB, Cityscapes train ~25 GB with
its masks): use a local SSD. One directory per run and input worker (the file name holds the
worker index). A run killed during its first epoch leaves a partial cache that the next start
discards (TensorFlow only finalises the files after a complete epoch).
"""

from __future__ import annotations

import glob
import os

import tensorflow as tf
from absl import logging


def cache_decoded(dataset: tf.data.Dataset, directory: str, name: str) -> tf.data.Dataset:
    """`dataset` (unshuffled, one epoch, decoded) cached under `directory`/`name`."""
    tf.io.gfile.makedirs(directory)
    prefix = os.path.join(directory, name)
    # A lockfile without a finished index is left by a run that died during its first epoch;
    # tf.data would refuse to start ("concurrent caching iterator") until it is removed.
    for lockfile in glob.glob(glob.escape(prefix) + "*.lockfile"):
        logging.warning("Removing the stale decoded-cache lockfile %s", lockfile)
        os.remove(lockfile)
    logging.info("Decoded images are cached at %s (filled during the first epoch)", prefix)
    return dataset.cache(prefix)


def cache_name(split: str, input_context) -> str:
    if input_context is None or input_context.num_input_pipelines <= 1:
        return f"{split}-decoded"
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    return f"{split}-decoded-{i:03d}-of-{n:03d}"
