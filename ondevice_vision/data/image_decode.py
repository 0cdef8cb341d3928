"""Image decoding shared by the folder readers: upfront validation with PIL, decoding in tf.data.

Policy for bad image files: they are found before training starts, skipped, counted and logged
with their path, and the run goes on. Decoding itself then happens in-graph with
`tf.io.decode_image`, which would otherwise abort the whole input pipeline with a message that
names no file.

Validation is cheap on purpose (a COCO train folder has 118k files): only regular files are
opened (a FIFO or device named `x.jpg` would block the read forever), PIL parses the header and
`verify()`s the file (PNG CRCs are checked), the format must be one TensorFlow decodes, the
width x height read from the header must not exceed `data.max_image_pixels` (a 540 KB PNG can
hold 13000x13000 pixels, 0.5 GB decoded, several GB through the pipeline), an animated WebP is
refused (TensorFlow's decoder fails on it, or corrupts memory), and a JPEG must end with its
end-of-image marker, because PIL's verify passes truncated JPEGs that TensorFlow then refuses.

What only a full decode finds (a JPEG whose scan data is damaged between intact markers) is
caught where the pipeline decodes: `map_skipping_undecodable` skips such an example and names
its file on stderr with a running count, instead of ending the run with an error naming no file.

EXIF orientation (phone photos are often stored sideways with a tag saying how to turn them) is
read in the same pass from the header and applied after decoding, in-graph, as PIL's
`ImageOps.exif_transpose` and every image viewer do. Where annotations give the size the labels
were drawn at, `orientation_for` keeps the stored pixels when that size is the stored one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import stat
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image, UnidentifiedImageError

from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import dataset_paths

# Formats tf.io.decode_image understands (JPEG XL is not in PIL's core formats).
TF_DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})

_JPEG_END_OF_IMAGE = b"\xff\xd9"
# EXIF tag 0x0112 (TIFF "Orientation"): 1 is upright; 2..8 are the flips and quarter turns that
# bring the stored pixels upright; 5..8 swap width and height.
EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Some writers pad a JPEG after its end-of-image marker; look for the marker in the tail.
_JPEG_TAIL_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """What upfront validation learned about one file; `problem` is None for a good image."""

    path: str
    problem: str | None
    width: int = 0  # as stored in the file
    height: int = 0
    orientation: int = 1  # EXIF orientation, 1..8; 1 when the file has none

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied."""
        if self.orientation in _SWAPPING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def check_image_file(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageCheck:
    """Validates one image file without decoding its pixels. `max_pixels`: the largest
    width x height accepted (0: any)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ImageCheck(path, "file not found")
    except OSError as e:
        return ImageCheck(path, f"cannot be read ({e.strerror or e})")
    if not stat.S_ISREG(mode):
        return ImageCheck(path, f"{_file_kind(mode)}, not a regular file")
    try:
        with Image.open(path) as im:
            fmt, (width, height) = im.format, im.size
            animated = fmt == "WEBP" and getattr(im, "n_frames", 1) > 1
            orientation = _exif_orientation(im)
            if max_pixels and width * height > max_pixels:
                return _too_large(path, width, height, max_pixels)
            im.verify()
    except FileNotFoundError:
        return ImageCheck(path, "file not found")
    except UnidentifiedImageError:
        return ImageCheck(path, "not a recognised image file")
    except Image.DecompressionBombError as e:  # Pillow's own limit, whatever max_pixels says
        return ImageCheck(path, f"too many pixels ({e})")
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error...)
        return ImageCheck(path, f"corrupt image ({type(e).__name__}: {e})")
    if fmt not in TF_DECODABLE_FORMATS:
        return ImageCheck(
            path, f"unsupported image format {fmt} (need one of JPEG, PNG, GIF, BMP, WEBP)"
        )
    if animated:
        return ImageCheck(path, "animated WebP (TensorFlow decodes still WebP images only)")
    if width <= 0 or height <= 0:
        return ImageCheck(path, f"empty image {width}x{height}")
    if fmt == "JPEG" and not _jpeg_has_end_marker(path):
        return ImageCheck(path, "truncated JPEG (no end-of-image marker)")
    return ImageCheck(path, None, width=width, height=height, orientation=orientation)


def _too_large(path: str, width: int, height: int, max_pixels: int) -> ImageCheck:
    return ImageCheck(
        path,
        f"{width}x{height} = {width * height:,} pixels, above data.max_image_pixels "
        f"({max_pixels:,}); raise it to read this image",
    )


def _exif_orientation(im: Image.Image) -> int:
    # A PNG's EXIF may follow its pixel data, where reading it would decode the whole image;
    # only an eXIf chunk ahead of the pixels (what writers emit) is read.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block leaves the pixels readable: treat them as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orientation_for(check: ImageCheck, annotated_size: tuple[float, float] | None):
    """The orientation to apply for labels drawn at `annotated_size` (width, height; None or
    zeros when unknown), and a problem description when the file's orientation is not applied.

    The orientation is applied unless the annotated size is the stored size and not the displayed
    one: then the labels were drawn on the stored pixels (by a tool that ignores EXIF), and turning
    the image would put them in the wrong place.
    """
    if check.orientation == 1:
        return 1, None
    if annotated_size is not None and all(v > 0 for v in annotated_size):
        size = tuple(int(v) for v in annotated_size)
        if size == (check.width, check.height) and size != check.displayed_size:
            return 1, (
                f"EXIF orientation {check.orientation} not applied: the annotated size "
                f"{size[0]}x{size[1]} (width x height) is the stored one, so the labels were "
                "drawn on the unrotated pixels"
            )
    return check.orientation, None


def log_unapplied_orientations(problems: Sequence[tuple[str, str]], source: str) -> None:
    """One warning per file whose EXIF orientation was left unapplied (path, problem)."""
    for path, problem in problems:
        logging.warning("%s: %s: %s", source, path, problem)
    if problems:
        logging.warning(
            "%s: %d images keep their stored orientation (see above)", source, len(problems)
        )


def _jpeg_has_end_marker(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _JPEG_TAIL_BYTES))
        return _JPEG_END_OF_IMAGE in f.read()


def check_image_files(
    paths: Sequence[str], num_threads: int = 16, max_pixels: int = MAX_IMAGE_PIXELS
) -> list[ImageCheck]:
    """`check_image_file` over many files (threads: the work is mostly file I/O), in input order."""
    if len(paths) < 64:
        return [check_image_file(p, max_pixels) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        return list(pool.map(lambda p: check_image_file(p, max_pixels), paths, chunksize=64))


def log_bad_images(checks: Sequence[ImageCheck], source: str) -> int:
    """Logs every bad image with its path and problem; returns how many there are."""
    bad = [c for c in checks if c.problem is not None]
    for c in bad:
        logging.warning("%s: skipping image %s: %s", source, c.path, c.problem)
    if bad:
        logging.warning("%s: skipped %d of %d images as unreadable", source, len(bad), len(checks))
    return len(bad)


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, 3] RGB, in-graph.

    Gray is replicated, alpha dropped, palettes expanded, CMYK JPEGs converted, 16-bit PNGs scaled
    to 8 bits, and only the first frame of an animation is kept (animated WebP aside: TensorFlow
    cannot decode those, `check_image_file` refuses them).
    """

    def webp():  # TensorFlow's WebP decoder gives RGBA files 4 channels only ("channels=3" fails)
        return tf.io.decode_image(encoded, channels=0, dtype=tf.uint8, expand_animations=False)[
            ..., :3
        ]

    def other():
        return tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)

    is_webp = tf.strings.regex_full_match(tf.strings.substr(encoded, 0, 12), "(?s)RIFF....WEBP")
    image = tf.cond(is_webp, webp, other)
    image.set_shape([None, None, 3])
    return image


def _empty_like(spec: tf.TensorSpec) -> tf.Tensor:
    return tf.zeros([0 if d is None else d for d in spec.shape.as_list()], spec.dtype)


def _attempt(fn, inputs: tuple, fallback):
    """(fn(*inputs), True), or (fallback(output spec), False) where `fn` fails: `fn` runs in a
    one-element dataset that drops its failure (`ignore_errors`). That dataset instantiates
    `fn` once per call, a cost that grows with `fn`'s graph, so callers keep `fn` small."""
    attempt = (
        tf.data.Dataset.from_tensors(inputs)
        .map(lambda *e: (fn(*e), True))
        .ignore_errors(log_warning=True)
    )
    failed = tf.data.Dataset.from_tensors((fallback(attempt.element_spec[0]), False))
    return attempt.concatenate(failed).take(1).get_single_element()


def decoded_or_placeholder(decode, *inputs) -> tuple[tf.Tensor, tf.Tensor]:
    """(decode(*inputs), True), or (a black 1x1 RGB placeholder, False) where the decoder refuses
    the bytes: only the decode runs under the guard, so a pipeline whose function decodes in its
    middle (the SSD crop window) carries on with the placeholder and drops the element after
    (`map_skipping_undecodable(..., reports_failure=True)`)."""

    def placeholder(spec):
        del spec
        return tf.zeros([1, 1, 3], tf.uint8)

    image, ok = _attempt(decode, inputs, placeholder)
    image.set_shape([None, None, 3])
    return image, ok


def map_skipping_undecodable(
    dataset: tf.data.Dataset,
    fn,
    name_of,
    source: str,
    policy: str = "skip",
    problem: str = "TensorFlow cannot decode it",
    reports_failure: bool = False,
    **map_kwargs,
) -> tf.data.Dataset:
    """`dataset.map(fn)`, where an element on which `fn` fails (a file TensorFlow's decoders
    refuse: damaged JPEG scan data between intact markers, which only a full decode finds) is
    skipped, named (`name_of(element)`, its file) on stderr and counted, instead of ending the
    pipeline with an error that names no file. `policy="error"`: the error names the file.

    Each element runs `fn` in a one-element dataset that drops its failure
    (`ignore_errors`); a running count over the stream names the skipped files in order.
    `reports_failure`: `fn` returns (output, decoded) itself, having decoded through
    `decoded_or_placeholder`, and runs as a plain map (cheaper for a large `fn`: docs/speed.md).
    Everything stays in the graph (tf.data service workers run it too). `fn`'s outputs must be
    dense tensors.
    """

    # A graph string constant must be UTF-8 (a folder name may not be).
    source = source.encode("utf-8", "backslashreplace").decode("utf-8")

    def guarded(*element):
        name = name_of(*element)
        if reports_failure:
            output, ok = fn(*element)
        else:
            inputs = element if len(element) > 1 else element[0]
            output, ok = _attempt(fn, inputs, lambda spec: tf.nest.map_structure(_empty_like, spec))
        return output, ok, name

    def count(skipped, item):
        output, ok, name = item
        skipped += tf.cast(tf.logical_not(ok), tf.int64)
        if policy == "error":
            check = tf.debugging.Assert(
                ok, [tf.strings.join([f"{source}: ", name, f": {problem}"])]
            )
            with tf.control_dependencies([check]):
                ok = tf.identity(ok)
        else:

            def report():
                message = tf.strings.join(
                    [
                        f"WARNING: {source}: skipping ",
                        name,
                        f" ({problem}; ",
                        tf.strings.as_string(skipped),
                        " skipped so far)",
                    ]
                )
                tf.print(message, output_stream=sys.stderr)
                return tf.constant(True)

            tf.cond(ok, lambda: tf.constant(True), report)
        return skipped, (output, ok)

    # No autograph: `guarded` and `count` branch with tf.cond already (converting is slow).
    guarded = tf.autograph.experimental.do_not_convert(guarded)
    count = tf.autograph.experimental.do_not_convert(count)
    dataset = dataset.map(guarded, **map_kwargs).scan(tf.constant(0, tf.int64), count)
    return dataset.filter(lambda output, ok: ok).map(_first)


def _first(output, ok):
    del ok
    return output


def resize_pixels(images: tf.Tensor, size) -> tf.Tensor:
    """Bilinear resize to `size` (height, width) -> float32 pixels clipped to 0..255.

    One image [H, W, 3] or a batch [B, H, W, 3]. The training and eval pipelines, the serving
    signatures, TFLite calibration and the TFLite runner all resize with this, so a model sees
    the same pixels wherever it runs (bilinear overshoots 0..255 at edges without the clip).
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), tuple(size), method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


# The EXIF block sits in the file's first segments (JPEG APP1 "Exif\0\0", PNG eXIf chunk ahead
# of the pixels); APP1 is at most 64 KiB.
_EXIF_SEARCH_BYTES = 65536 + 16
_JPEG_EXIF = (0xFF, 0xE1, None, None, 0x45, 0x78, 0x69, 0x66, 0x00, 0x00)  # FF E1 len "Exif\0\0"
_PNG_EXIF = (0x65, 0x58, 0x49, 0x66)  # "eXIf"
_MAX_IFD_ENTRIES = 64


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (int32 1..8) of encoded JPEG or PNG bytes, read in-graph; 1 where
    the file has none, or an EXIF block this cannot read (as `check_image_file` treats it).

    For serving signatures that take encoded bytes, where no Python (PIL) runs: a phone photo
    sent as it is stored is then turned upright as by every viewer and `ondevice-predict`.
    Reads the first image file directory's Orientation tag (0x0112), either byte order.
    """
    head = tf.io.decode_raw(tf.strings.substr(encoded, 0, _EXIF_SEARCH_BYTES), tf.uint8)
    size = tf.shape(head)[0]
    # -1 past the end (and for empty input), so every read below stays a valid gather.
    data = tf.concat([tf.cast(head, tf.int32), [-1]], 0)

    def byte(index):
        return tf.gather(data, tf.where((index >= 0) & (index < size), index, size))

    def first_match(pattern, skip):
        """Offset just past the first occurrence of `pattern` (None: any byte), or -1."""
        n = tf.maximum(size - len(pattern) + 1, 0)
        starts = tf.range(n)
        found = tf.ones([n], tf.bool)
        for k, value in enumerate(pattern):
            if value is not None:
                found &= byte(starts + k) == value
        hits = tf.where(found)[:, 0]
        return tf.cond(
            tf.size(hits) > 0, lambda: tf.cast(hits[0], tf.int32) + skip, lambda: tf.constant(-1)
        )

    is_jpeg = (byte(tf.constant(0)) == 0xFF) & (byte(tf.constant(1)) == 0xD8)
    is_png = byte(tf.constant(1)) == 0x50  # "\x89PNG"
    tiff = tf.where(
        is_jpeg,
        first_match(_JPEG_EXIF, len(_JPEG_EXIF)),
        tf.where(is_png, first_match(_PNG_EXIF, len(_PNG_EXIF)), -1),
    )
    little = (byte(tiff) == 0x49) & (byte(tiff + 1) == 0x49)  # "II"; "MM" is big-endian
    big = (byte(tiff) == 0x4D) & (byte(tiff + 1) == 0x4D)

    def u16(at):
        lo, hi = tf.where(little, byte(at), byte(at + 1)), tf.where(little, byte(at + 1), byte(at))
        return tf.where((lo < 0) | (hi < 0), -1, lo + 256 * hi)

    def u32(at):
        low, high = tf.where(little, u16(at), u16(at + 2)), tf.where(little, u16(at + 2), u16(at))
        return tf.where((low < 0) | (high < 0) | (high > 255), -1, low + 65536 * high)

    ifd = tiff + u32(tiff + 4)
    count = tf.minimum(u16(ifd), _MAX_IFD_ENTRIES)
    entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES)
    is_orientation = (tf.range(_MAX_IFD_ENTRIES) < count) & (u16(entries) == EXIF_ORIENTATION)
    values = tf.where(is_orientation & (u16(entries + 2) == 3), u16(entries + 8), -1)  # SHORT
    value = tf.reduce_max(values)
    readable = (tiff >= 0) & (little | big) & (u16(tiff + 2) == 42) & (u32(tiff + 4) >= 8)
    return tf.where(readable & (value >= 1) & (value <= 8), value, 1)


def decode_upright(encoded: tf.Tensor) -> tf.Tensor:
    """`decode_rgb`, turned upright by the file's EXIF orientation (`exif_orientation`)."""
    return apply_orientation(decode_rgb(encoded), exif_orientation(encoded))


def read_rgb(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one image file in-graph (validate the file upfront)."""
    return decode_rgb(tf.io.read_file(path))


def apply_orientation(image: tf.Tensor, orientation) -> tf.Tensor:
    """Turns decoded [H, W, C] pixels upright for an EXIF orientation 1..8, in-graph, exactly as
    PIL's `ImageOps.exif_transpose` (others: unchanged)."""

    def transposed():
        return tf.transpose(image, [1, 0, 2])

    branches = [  # index: orientation - 1
        lambda: image,
        lambda: tf.reverse(image, [1]),
        lambda: tf.reverse(image, [0, 1]),
        lambda: tf.reverse(image, [0]),
        transposed,
        lambda: tf.reverse(transposed(), [1]),
        lambda: tf.reverse(transposed(), [0, 1]),
        lambda: tf.reverse(transposed(), [0]),
    ]
    turned = tf.switch_case(
        tf.cast(orientation, tf.int32) - 1, branch_fns=branches, default=lambda: image
    )
    turned.set_shape([None, None, image.shape[-1]])
    return turned


def image_files_dataset(
    paths: Sequence[str],
    per_image: dict[str, Sequence],
    orientations: Sequence[int] | None = None,
    encoded: bool = False,
) -> tf.data.Dataset:
    """A dataset of {"image": decoded uint8 RGB, **per_image fields} for validated image files.

    Each value of `per_image` has one entry per path: a scalar, or a NumPy array whose first
    dimension varies between images (boxes, classes), which is sliced per image. `orientations`:
    the EXIF orientation to apply to each image (default: none).
    With `encoded` the file's bytes come as "encoded_image" (and the orientation as
    "orientation") instead, for a pipeline that decodes them later (after shuffling, or only a
    crop window); the file's path stays in the example as "path", so that pipeline can name a
    file its decoder refuses (`map_skipping_undecodable`). Decoded here, such a file is skipped
    and named.
    """
    if orientations is None:
        orientations = [1] * len(paths)
    tensors = {
        "path": tf.constant(dataset_paths.tf_paths(paths), tf.string),
        "orientation": tf.constant(np.asarray(orientations, np.int32).reshape(len(paths))),
    }
    for key, values in per_image.items():
        if len(values) != len(paths):
            raise ValueError(f"{key}: {len(values)} entries for {len(paths)} images")
        if isinstance(values, (list, tuple)) and values and np.ndim(values[0]) > 0:
            lengths = [len(v) for v in values]
            tensors[key] = tf.RaggedTensor.from_row_lengths(np.concatenate(values), lengths)
        else:
            tensors[key] = tf.constant(np.asarray(values))

    def read(ex):
        return {**ex, "encoded_image": tf.io.read_file(ex["path"])}

    def decode(ex):
        ex = dict(ex)
        path = ex.pop("path")
        ex["image"] = apply_orientation(read_rgb(path), ex.pop("orientation"))
        return ex

    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if encoded:
        return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    return map_skipping_undecodable(
        ds, decode, _path, "image files", num_parallel_calls=tf.data.AUTOTUNE
    )


def _path(example):
    return example["path"]


def example_name(example: dict) -> tf.Tensor:
    """What names an example in a message: its file's path, else its image id."""
    if "path" in example:
        return example["path"]
    return tf.strings.as_string(example["image_id"]) if "image_id" in example else tf.constant("?")
