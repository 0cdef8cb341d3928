"""Generated stand-ins for COCO and Cityscapes on disk, for the input-pipeline benchmarks.

Folder layouts (what `coco_folder` and `cityscapes_folder` read) plus TFRecord files of the same
encoded images, which `tfds_records` serves in place of prepared TFDS datasets, so the "tfds"
sources run their real code over real JPEG/PNG bytes. Pixels come from photos when a folder of
JPEGs is given (real image statistics decode at real cost; random noise does not), else from
smooth gradients plus sensor-like noise.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os

import numpy as np
from PIL import Image, ImageFile

# A few of the photos one may point --photo_dir at end early; their pixels still serve.
ImageFile.LOAD_TRUNCATED_IMAGES = True

COCO_SIZE = (480, 640)  # height, width: COCO's most common shape
CITYSCAPES_SIZE = (1024, 2048)
# Cityscapes labelIds that have a trainId (road, sidewalk, building, ..., car), plus 0 (ignored).
_LABEL_IDS = (0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def _photos(photo_dir: str | None) -> list[str]:
    if not photo_dir:
        return []
    return sorted(glob.glob(os.path.join(photo_dir, "*.jpg")))


def _picture(rng, photos: list[str], index: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if photos:
        with Image.open(photos[index % len(photos)]) as im:
            im = im.convert("RGB").resize((w, h), Image.BICUBIC)
            pixels = np.asarray(im, np.float32)
    else:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, 3).astype(np.float32)
        pixels = base + 40 * np.stack(
            [np.sin(yy / (17 + index)), np.cos(xx / 23), np.sin((xx + yy) / 31)], -1
        )
    # Upscaled photos are smoother than camera frames; noise brings PNG sizes near the real ones.
    pixels = pixels + rng.normal(0, 3, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_coco(root: str, num_images: int, size=COCO_SIZE, photo_dir=None, seed=0) -> str:
    """A COCO-format folder (annotations.json + JPEGs, quality 90) and coco.tfrecord beside it."""
    done = os.path.join(root, "annotations.json")
    if os.path.exists(done):
        return root
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = _photos(photo_dir)
    h, w = size
    images, annotations = [], []
    for i in range(num_images):
        name = f"{i:06d}.jpg"
        Image.fromarray(_picture(rng, photos, i, size)).save(os.path.join(root, name), quality=90)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for _ in range(rng.integers(1, 12)):
            bw, bh = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.6) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.choice(_COCO_IDS)),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(rng.random() < 0.02),
                }
            )
    categories = [{"id": c, "name": f"class_{c}"} for c in _COCO_IDS]
    payload = {"images": images, "annotations": annotations, "categories": categories}
    _write_coco_records(root, images, annotations)
    with open(done + ".tmp", "w") as f:
        json.dump(payload, f)
    os.replace(done + ".tmp", done)
    return root


_COCO_IDS = tuple(
    c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
)  # the 80 official category ids


def _write_coco_records(root, images, annotations):
    import tensorflow as tf

    index = {c: i for i, c in enumerate(_COCO_IDS)}
    with tf.io.TFRecordWriter(os.path.join(root, "coco.tfrecord")) as writer:
        for info in images:
            anns = [a for a in annotations if a["image_id"] == info["id"]]
            h, w = info["height"], info["width"]
            yxyx = [
                (y / h, x / w, (y + bh) / h, (x + bw) / w)
                for x, y, bw, bh in (a["bbox"] for a in anns)
            ]
            with open(os.path.join(root, info["file_name"]), "rb") as f:
                encoded = f.read()
            feature = {
                "image": _bytes(encoded),
                "id": _ints([info["id"]]),
                "bbox": _floats(np.asarray(yxyx, np.float32).ravel()),
                "label": _ints([index[a["category_id"]] for a in anns]),
                "is_crowd": _ints([a["iscrowd"] for a in anns]),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def write_cityscapes(
    root: str, num_frames: int, size=CITYSCAPES_SIZE, photo_dir=None, seed=0
) -> str:
    """<root>/leftImg8bit/train/bench/*.png + gtFine labelIds PNGs, and cityscapes.tfrecord."""
    done = os.path.join(root, "cityscapes.tfrecord")
    if os.path.exists(done):
        return root
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    photos = _photos(photo_dir)
    image_dir = os.path.join(root, "leftImg8bit", "train", "bench")
    label_dir = os.path.join(root, "gtFine", "train", "bench")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    h, w = size
    with tf.io.TFRecordWriter(done + ".tmp") as writer:
        for i in range(num_frames):
            stem = f"bench_{i:06d}_000019"
            image_path = os.path.join(image_dir, stem + "_leftImg8bit.png")
            label_path = os.path.join(label_dir, stem + "_gtFine_labelIds.png")
            Image.fromarray(_picture(rng, photos, i + 7, size)).save(image_path)
            Image.fromarray(_label_ids(rng, size), mode="L").save(label_path)
            with open(image_path, "rb") as f, open(label_path, "rb") as g:
                feature = {
                    "image": _bytes(f.read()),
                    "label": _bytes(g.read()),
                    "id": _bytes(stem.encode()),
                }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    os.replace(done + ".tmp", done)
    return root


def _label_ids(rng, size) -> np.ndarray:
    """Blocky regions of labelIds, like a street scene's large segments."""
    h, w = size
    mask = np.zeros(size, np.uint8)
    mask[h // 2 :] = 7  # road
    mask[: h // 3] = 23  # sky
    for _ in range(40):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        mask[y0 : y0 + rng.integers(8, h // 3), x0 : x0 + rng.integers(8, w // 6)] = rng.choice(
            _LABEL_IDS
        )
    return mask


def _bytes(value):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


@contextlib.contextmanager
def tfds_records(coco_root: str | None, cityscapes_root: str | None):
    """TFDS's `as_dataset` of coco/2017 and cityscapes answered from the TFRecord files.

    Records are read, parsed and (unless the caller skips decoding) decoded as TFDS does it, so
    the cost per image is that of a prepared TFDS dataset.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def coco(decoders):
        spec = {
            "image": tf.io.FixedLenFeature([], tf.string),
            "id": tf.io.FixedLenFeature([], tf.int64),
            "bbox": tf.io.VarLenFeature(tf.float32),
            "label": tf.io.VarLenFeature(tf.int64),
            "is_crowd": tf.io.VarLenFeature(tf.int64),
        }
        skip = bool(decoders) and "image" in decoders

        def parse(record):
            ex = tf.io.parse_single_example(record, spec)
            image = ex["image"]
            if not skip:
                image = tf.io.decode_image(image, channels=3, expand_animations=False)
            return {
                "image": image,
                "image/id": ex["id"],
                "objects": {
                    "bbox": tf.reshape(tf.sparse.to_dense(ex["bbox"]), [-1, 4]),
                    "label": tf.sparse.to_dense(ex["label"]),
                    "is_crowd": tf.cast(tf.sparse.to_dense(ex["is_crowd"]), tf.bool),
                },
            }

        path = os.path.join(coco_root, "coco.tfrecord")
        return tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    def cityscapes(decoders):
        spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("image", "label", "id")}
        skip = set(decoders or ())  # the features the caller decodes itself (SkipDecoding)

        def parse(record):
            ex = tf.io.parse_single_example(record, spec)
            image, label = ex["image"], ex["label"]
            if "image_left" not in skip:
                image = tf.io.decode_png(image, channels=3)
            if "segmentation_label" not in skip:
                label = tf.io.decode_png(label, channels=1)
            return {"image_left": image, "segmentation_label": label, "image_id": ex["id"]}

        path = os.path.join(cityscapes_root, "cityscapes.tfrecord")
        return tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del split, read_config, shuffle_files
        if self.name == "coco":
            return coco(decoders)
        return cityscapes(decoders)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield
