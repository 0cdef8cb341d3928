"""Shared test set-up. Tests mirror the package (tests/<package>/test_<module>.py); helpers that
several test modules use live in tests/helpers/ (importable as top-level modules).

Scheduling under pytest-xdist (`make test` runs 2 workers): pyproject.toml sets
--dist=loadscope, so each test module runs on one worker and builds its module-scoped fixtures
once (with plain `load`, a module's tests spread over both workers and each built them), and
--no-loadscope-reorder, so modules go out in the order `pytest_collection_modifyitems` gives
them: the slowest first, so that they do not form a tail on one worker while the other idles.
(loadgroup, which could also join modules, does not group with pytest 9.2: pytest-xdist #1386.)
"""

import os
import sys

import pytest

# Quiet TensorFlow's C++ logging and keep each test worker to the machine's small share of cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))

# Slowest first, by the CI runner's --durations (`make test`): a module goes out at the rank of
# its first listed test (or of the module itself); unlisted modules follow in collection order.
# A stale entry costs balance, never correctness.
SLOW_FIRST = (
    "tests/train/test_distributed.py::test_two_workers_train_like_one_device_and_stop_together",
    "tests/export/test_tflite_int8_detection.py",  # trains overfit_detector
    "tests/train/test_faults.py::test_nan_stop_then_sigterm_then_sigkill_then_resume_to_the_end",
    "tests/export/test_tflite_int8_segmentation.py",  # trains overfit_segmenter
    "tests/test_benchmarks.py::test_gpu_throughput_tiny_runs_and_reports_json",
    "tests/reference/",
    "tests/train/test_data_service.py",
    "tests/export/test_tflite_segmentation.py",
    "tests/export/test_saved_model.py",
    "tests/export/test_tflite_detection.py",
    "tests/test_cli.py::test_train_and_eval_then_eval_the_checkpoint",
    "tests/train/test_bn_recalibration.py::test_detection_default_momentum_short_run",
    "tests/test_predict.py",
    "tests/train/test_mixed_precision.py::test_bfloat16_training_run_on_cpu",
    "tests/train/test_faults.py::test_sigterm_lands_within_a_few_steps_whatever_steps_per_loop",
    "tests/train/test_bn_recalibration.py::test_segmentation_default_momentum_short_run",
    "tests/test_cli.py::test_info_reports_counts_and_endpoints",
    "tests/eval/test_evaluate_exported.py",
    "tests/test_bad_input.py::test_command_line_mistakes_are_named",
    "tests/train/test_distributed.py::test_mirrored_replicas_slice_one_pipeline",
)


def _rank(nodeid):
    for rank, prefix in enumerate(SLOW_FIRST):
        if nodeid.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
    # A module's items stay together, in collection order: a module is one xdist unit, and
    # pytest tears a module-scoped fixture down when the next item is from another module.
    modules = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    ordered = sorted(modules.values(), key=lambda members: min(_rank(i.nodeid) for i in members))
    items[:] = [item for members in ordered for item in members]


def _shared_dir(tmp_path_factory, name):
    """A folder all xdist workers of this run share (next to their own base temp dirs)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return str(base / name)


@pytest.fixture(scope="session")
def overfit_detector(tmp_path_factory):
    """SSDLite V3-Small trained on the two images of `overfit_detection_config`, once per test
    run (tests/helpers/export_fixtures.py: the first worker trains, the others load its weights):
    (config, model, the trainer's result). Users must leave the model's weights as they are."""
    from export_fixtures import overfit_detection_config, shared_overfit_model

    config = overfit_detection_config()
    model, result = shared_overfit_model(config, _shared_dir(tmp_path_factory, "overfit_detector"))
    return config, model, result


@pytest.fixture(scope="session")
def overfit_segmenter(tmp_path_factory):
    """LR-ASPP V3-Small trained on the two images of `overfit_segmentation_config`, as
    `overfit_detector`."""
    from export_fixtures import overfit_segmentation_config, shared_overfit_model

    config = overfit_segmentation_config()
    model, result = shared_overfit_model(config, _shared_dir(tmp_path_factory, "overfit_segmenter"))
    return config, model, result
