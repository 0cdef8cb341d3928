"""Shared test set-up. Tests mirror the package (tests/<package>/test_<module>.py); helpers that
several test modules use live in the package tests.helpers (`from tests.helpers import train_cli`:
pytest's importlib mode imports tests/ as the package `tests`, so no sys.path editing is needed).

Scheduling under pytest-xdist (`make test` runs 2 workers): pyproject.toml sets
--dist=loadscope, so each test module runs on one worker and builds its module-scoped fixtures
once (with plain `load`, a module's tests spread over both workers and each built them), and
--no-loadscope-reorder, so modules go out in the order `pytest_collection_modifyitems` gives
them: the slowest first, so that they do not form a tail on one worker while the other idles.
(loadgroup, which could also join modules, does not group with pytest 9.2: pytest-xdist #1386.)
"""

import os

import pytest

# Quiet TensorFlow's C++ logging and keep each test worker to the machine's small share of cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


# Slowest modules first, by a `-n 2 --durations=40` run of the whole suite (seconds on the shared,
# busy 2-core development machine: slower than the CI runner). Unlisted modules follow in collection
# order; tests/tasks/test_{detection,segmentation}.py come after the int8 modules that train the
# models they share. A stale entry costs balance, never correctness.
SLOW_FIRST = (
    "tests/export/test_tflite_int8_detection.py",  # 380 s, trains overfit_detector
    "tests/export/test_tflite_int8_segmentation.py",  # 280 s, trains overfit_segmenter
    "tests/train/test_faults.py",  # 260 s
    "tests/reference/test_import_end_to_end.py",  # 200 s, runs the OD API reference
    "tests/train/test_bn_recalibration.py",  # 195 s
    "tests/test_cli.py",  # 190 s
    "tests/train/test_distributed.py",  # 180 s
    "tests/train/test_data_service.py",  # 135 s
    "tests/train/test_training_control.py",  # one QAT + EMA run, ~200 s at load 25, alone
    "tests/export/test_saved_model.py",  # 125 s
    "tests/test_benchmarks.py",  # 120 s
    "tests/export/test_tflite_detection.py",  # 90 s
    "tests/export/test_tflite_segmentation.py",  # 70 s
    "tests/export/test_calibration.py",  # three int8 conversions
    "tests/export/test_raw_outputs.py",  # four TFLite conversions and a SavedModel
    "tests/test_benchmark.py",  # a SavedModel and three TFLite conversions, one CLI start
    "tests/test_predict.py",
    "tests/eval/test_watch.py",  # ~80 s at load 25, alone
    "tests/train/test_mixed_precision.py",
    "tests/train/test_jit_compile.py",  # one XLA compile of a train step, ~40 s at load 4
    "tests/reference/",
    "tests/eval/test_evaluate_exported.py",
    "tests/export/test_edgetpu_ops.py",
    "tests/test_bad_input.py",
)


def _rank(module):
    for rank, prefix in enumerate(SLOW_FIRST):
        if module.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
    # `opt_in` tests run only when -m names them (pyproject.toml's marker list says why).
    if "opt_in" not in (config.option.markexpr or ""):
        opted = [item for item in items if item.get_closest_marker("opt_in")]
        if opted:
            config.hook.pytest_deselected(items=opted)
            items[:] = [item for item in items if not item.get_closest_marker("opt_in")]
    # A module's items stay together, in collection order: a module is one xdist unit, and
    # pytest tears a module-scoped fixture down when the next item is from another module.
    modules = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    ordered = sorted(modules, key=_rank)
    items[:] = [item for module in ordered for item in modules[module]]


def _shared_dir(tmp_path_factory, name):
    """A folder all xdist workers of this run share (next to their own base temp dirs)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return str(base / name)


@pytest.fixture(scope="session")
def lively_detector():
    """`lively_model` of `detection_config()` (tests/helpers/export_fixtures.py), built once per
    test process for every export test. Users must leave the model's weights as they are."""
    from tests.helpers.export_fixtures import detection_config, lively_model

    return lively_model(detection_config())


@pytest.fixture(scope="session")
def lively_segmenter():
    """`lively_model` of `segmentation_config()`, as `lively_detector`."""
    from tests.helpers.export_fixtures import lively_model, segmentation_config

    return lively_model(segmentation_config())


@pytest.fixture(scope="session")
def overfit_detector(tmp_path_factory):
    """SSDLite V3-Small trained on the two images of `overfit_detection_config`, once per test
    run (tests/helpers/export_fixtures.py: the first worker trains, the others load its weights):
    (config, model, the trainer's result). Users must leave the model's weights as they are."""
    from tests.helpers.export_fixtures import overfit_detection_config, shared_overfit_model

    config = overfit_detection_config()
    model, result = shared_overfit_model(config, _shared_dir(tmp_path_factory, "overfit_detector"))
    return config, model, result


@pytest.fixture(scope="session")
def overfit_detector_tflite(overfit_detector, tmp_path_factory):
    """{"none": dir, "int8": dir}: float and int8 TFLite exports of `overfit_detector`, written
    once per test run for the modules that read them (tests/helpers/export_fixtures.py
    `shared_tflite_exports`). Users must leave the files as they are."""
    from tests.helpers.export_fixtures import shared_tflite_exports

    config, model, _ = overfit_detector
    directory = _shared_dir(tmp_path_factory, "overfit_detector_tflite")
    return shared_tflite_exports(config, model, directory)


@pytest.fixture(scope="session")
def overfit_segmenter(tmp_path_factory):
    """LR-ASPP V3-Small trained on the two images of `overfit_segmentation_config`, as
    `overfit_detector`."""
    from tests.helpers.export_fixtures import overfit_segmentation_config, shared_overfit_model

    config = overfit_segmentation_config()
    model, result = shared_overfit_model(config, _shared_dir(tmp_path_factory, "overfit_segmenter"))
    return config, model, result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    # Captured output may hold file names that are not UTF-8 (surrogate escapes, as the non-UTF-8
    # name tests write them); pytest-xdist cannot send those to the controller and aborts the run.
    report.sections = [
        (title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
        for title, text in report.sections
    ]
