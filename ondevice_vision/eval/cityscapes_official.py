"""Official Cityscapes pixel-level numbers via cityscapesscripts, and the files it (and the test
server) reads.

Predictions are full-size, single-channel PNGs of Cityscapes *labelIds* (not train ids) named
`<city>_<seq>_<frame>_pred.png`; the evaluator pairs them with ground truth by the
`<city>_<seq>_<frame>` prefix. The test server takes the same files, zipped: `write_submission`.

Class IoU from the official tool equals `StreamingConfusionMatrix` mIoU over train ids: both drop
ground-truth-ignored pixels and average only over classes with a non-empty union (see miou.py).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import zipfile

import numpy as np
from absl import logging
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from ondevice_vision import files

# The 19 evaluated classes, in train-id order (trainIds 0..18).
_EVAL_LABELS = sorted(
    (label for label in _CITYSCAPES_LABELS if not label.ignoreInEval and 0 <= label.trainId < 255),
    key=lambda label: label.trainId,
)
NUM_TRAIN_IDS = len(_EVAL_LABELS)
EVAL_CLASS_NAMES = tuple(label.name for label in _EVAL_LABELS)
# train id -> label id for 0..18; the ignore value 255 becomes 0 ("unlabeled"), which the official
# evaluator scores as a wrong prediction wherever the ground truth is an evaluated class.
TRAIN_ID_TO_LABEL_ID = np.zeros(256, dtype=np.uint8)
for _label in _EVAL_LABELS:
    TRAIN_ID_TO_LABEL_ID[_label.trainId] = _label.id
del _label


def core_name(image_stem: str) -> str:
    """'frankfurt_000000_000294[_leftImg8bit...]' -> 'frankfurt_000000_000294'."""
    stem = os.path.splitext(os.path.basename(image_stem))[0]
    parts = stem.split("_")
    if len(parts) < 3 or not parts[0] or not (parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError(
            f"'{image_stem}' is not a Cityscapes image name of the form <city>_<seq>_<frame>[_...]"
        )
    return "_".join(parts[:3])


def train_ids_to_label_ids(train_id_map: np.ndarray) -> np.ndarray:
    train_id_map = np.asarray(train_id_map)
    if train_id_map.ndim == 3 and train_id_map.shape[2] == 1:
        train_id_map = train_id_map[..., 0]
    if train_id_map.ndim != 2 or not np.issubdtype(train_id_map.dtype, np.integer):
        raise ValueError(
            f"expected an integer [H, W] train-id map, got {train_id_map.dtype} {train_id_map.shape}"
        )
    valid = ((train_id_map >= 0) & (train_id_map < NUM_TRAIN_IDS)) | (train_id_map == 255)
    if not valid.all():
        bad = np.unique(train_id_map[~valid])[:10].tolist()
        raise ValueError(f"train ids must be in [0, {NUM_TRAIN_IDS}) or 255, found {bad}")
    return TRAIN_ID_TO_LABEL_ID[train_id_map.astype(np.int64)]


def write_prediction_png(train_id_map: np.ndarray, image_stem: str, out_dir: str) -> str:
    """Writes `<out_dir>/<city>_<seq>_<frame>_pred.png` (labelIds, mode L); returns the path."""
    label_ids = train_ids_to_label_ids(train_id_map)
    path = os.path.join(out_dir, f"{core_name(image_stem)}_pred.png")
    files.write_png(label_ids, path)
    return path


def write_submission(
    predictions, out_dir: str, expected_shape=(1024, 2048), zip_path: str | None = None
) -> list[str]:
    """Writes test-server files for an iterable of (image_stem, train_id_map [H, W]).

    Every map must be full resolution (`expected_shape`; the server rejects other sizes). With
    `zip_path`, the PNGs are also packed (flat) into the zip archive the server's upload expects.
    """
    paths = []
    for image_stem, train_id_map in predictions:
        shape = tuple(np.shape(train_id_map)[:2])
        if expected_shape is not None and shape != tuple(expected_shape):
            raise ValueError(
                f"{image_stem}: prediction is {shape}, the submission needs full size "
                f"{tuple(expected_shape)}"
            )
        paths.append(write_prediction_png(train_id_map, image_stem, out_dir))
    if zip_path is not None:
        with files.atomic_write(zip_path, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in paths:
                    archive.write(path, arcname=os.path.basename(path))
    return paths


def run_official_evaluation(pred_dir: str, gt_label_files, out_json: str | None = None) -> dict:
    """Scores the `*_pred.png` files under pred_dir against `*_gtFine_labelIds.png` files.

    Returns classIoU, categoryIoU, classiIoU, categoryiIoU (means over non-NaN entries, as the
    official tool prints them), per_class / per_category ({name: {"IoU", "iIoU"}}), num_images and
    instance_level. iIoU needs `*_instanceIds.png` beside every labelIds file; when any is missing
    the iIoU numbers are NaN and a warning says why. With out_json, the result and the official
    tool's full dictionary (NaN -> null) are written there atomically.
    """
    gt_label_files = [str(p) for p in gt_label_files]
    if not gt_label_files:
        raise ValueError("run_official_evaluation: no ground truth files given")
    for path in gt_label_files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Cityscapes ground truth file not found: {path}")
    predictions = _predictions_by_core_name(pred_dir)
    pred_files = []
    for gt_path in gt_label_files:
        core = core_name(gt_path)
        if core not in predictions:
            raise FileNotFoundError(
                f"no prediction for {gt_path}: expected {core}*.png in {pred_dir}"
            )
        pred_files.append(predictions[core])

    instance_level = _instance_files_present(gt_label_files)
    module = _official_module()
    args = copy.copy(module.args)  # the module-level args stays untouched for other callers
    args.quiet = True
    args.JSONOutput = False
    args.evalInstLevelScore = instance_level
    args.evalPixelAccuracy = False
    args.colorized = False
    args.bold = ""
    args.nocol = ""
    args.exportFile = out_json or os.devnull
    args.predictionPath = None
    args.predictionWalk = None

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _numpy_in1d_for(module):
            official = module.evaluateImgLists(pred_files, gt_label_files, args)
    except SystemExit as exit_:
        # cityscapesscripts reports every problem by printing it and calling sys.exit.
        raise ValueError(
            f"cityscapesscripts evaluation of {pred_dir} failed: {captured.getvalue().strip()}"
        ) from exit_

    result = _summarise(official, instance_level, len(gt_label_files))
    if out_json:
        files.write_json(_nan_to_none({**result, "official": official}), out_json)
    return result


def _summarise(official: dict, instance_level: bool, num_images: int) -> dict:
    def instance_value(value):
        # Without instance files the tool still computes these from zero counts: meaningless.
        return float(value) if instance_level else math.nan

    eval_categories = sorted({label.category for label in _EVAL_LABELS})
    per_class = {
        name: {
            "IoU": float(official["classScores"][name]),
            "iIoU": instance_value(official["classInstScores"][name]),
        }
        for name in EVAL_CLASS_NAMES
    }
    per_category = {
        category: {
            "IoU": float(official["categoryScores"][category]),
            "iIoU": instance_value(official["categoryInstScores"][category]),
        }
        for category in eval_categories
    }
    return {
        "classIoU": float(official["averageScoreClasses"]),
        "categoryIoU": float(official["averageScoreCategories"]),
        "classiIoU": instance_value(official["averageScoreInstClasses"]),
        "categoryiIoU": instance_value(official["averageScoreInstCategories"]),
        "per_class": per_class,
        "per_category": per_category,
        "num_images": num_images,
        "instance_level": instance_level,
    }


def _predictions_by_core_name(pred_dir: str) -> dict[str, str]:
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"prediction directory not found: {pred_dir}")
    found: dict[str, str] = {}
    for root, _, filenames in os.walk(pred_dir):
        for filename in filenames:
            if not filename.endswith(".png"):
                continue
            try:
                core = core_name(filename)
            except ValueError:
                continue
            path = os.path.join(root, filename)
            if core in found:
                raise ValueError(f"two predictions for {core}: {found[core]} and {path}")
            found[core] = path
    return found


def _instance_files_present(gt_label_files: list[str]) -> bool:
    # The official tool derives the instance file name by replacing "labelIds" in the whole path.
    missing = [
        p
        for p in gt_label_files
        if "labelIds" not in os.path.basename(p)
        or not os.path.isfile(p.replace("labelIds", "instanceIds"))
    ]
    if missing:
        logging.warning(
            "Cityscapes iIoU disabled: %d of %d ground truth files have no *_instanceIds.png "
            "beside them (first: %s); classiIoU and categoryiIoU will be NaN.",
            len(missing),
            len(gt_label_files),
            missing[0],
        )
    return not missing


def _official_module():
    # At first import the module reads CITYSCAPES_DATASET / CITYSCAPES_EXPORT_DIR into its global
    # args (paths we override per call) and raises if CITYSCAPES_EXPORT_DIR is not a directory;
    # hide that variable so an unrelated setting cannot break evaluation.
    saved = os.environ.pop("CITYSCAPES_EXPORT_DIR", None)
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling
    finally:
        if saved is not None:
            os.environ["CITYSCAPES_EXPORT_DIR"] = saved
    return evalPixelLevelSemanticLabeling


class _NumpyWithIn1d:
    """numpy plus `in1d`, which cityscapesscripts 2.x calls and NumPy 2.4 removed."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def in1d(ar1, ar2, invert=False):
        return np.isin(np.asarray(ar1).ravel(), ar2, invert=invert)


@contextlib.contextmanager
def _numpy_in1d_for(module):
    """Gives only the evaluator module an `np` with in1d, for the duration of one call."""
    if hasattr(np, "in1d"):
        yield
        return
    original = module.np
    module.np = _NumpyWithIn1d()
    try:
        yield
    finally:
        module.np = original


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value
