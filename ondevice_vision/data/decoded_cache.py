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

The cache is keyed by what it was made from (`source_fingerprint`: the data settings, and every
file under the data folders with its size and modification time, annotation and list files by
their content): a run on changed data (one annotation edited, an image added) builds a new cache
and removes the stale one, rather than training on the previous data's pixels and labels.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import tensorflow as tf
from absl import logging

# Data settings that name folders whose files the cache depends on.
_FOLDER_KEYS = ("train_dir", "eval_dir", "root", "data_dir", "manual_dir")
# Files hashed by content (annotations, lists, class names); others by size and mtime.
_CONTENT_SUFFIXES = (".json", ".xml", ".txt", ".csv")


def source_fingerprint(data_config) -> str:
    """A digest of everything the decoded examples depend on: the data settings (decode options,
    folders, splits) and, for every folder they name, each file's relative path, size and
    modification time, and the content of its annotation and list files."""
    settings = {k: v for k, v in data_config.to_dict().items() if k != "decoded_cache"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for key in _FOLDER_KEYS:
        folder = settings.get(key)
        if not folder or not os.path.isdir(str(folder)):
            continue
        for parent, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(parent, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                relative = os.path.relpath(path, folder)
                digest.update(f"{key}:{relative}:{info.st_size}:{info.st_mtime_ns}\n".encode())
                if name.lower().endswith(_CONTENT_SUFFIXES) and os.path.isfile(path):
                    with open(path, "rb") as f:
                        digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]


def cache_decoded(
    dataset: tf.data.Dataset, directory: str, name: str, fingerprint: str = ""
) -> tf.data.Dataset:
    """`dataset` (unshuffled, one epoch, decoded) cached under `directory`/`name`, in files
    named by `fingerprint` (see source_fingerprint); the caches of other data are removed."""
    tf.io.gfile.makedirs(directory)
    prefix = os.path.join(directory, f"{name}-{fingerprint}" if fingerprint else name)
    for stale in glob.glob(glob.escape(os.path.join(directory, name)) + "-*"):
        if fingerprint and not stale.startswith(prefix):
            logging.warning(
                "Removing %s: a decoded cache of other data (the data or its settings changed)",
                stale,
            )
            os.remove(stale)
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
