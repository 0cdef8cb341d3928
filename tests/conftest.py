"""Shared test set-up. Tests mirror the package (tests/<package>/test_<module>.py); helpers that
several test modules use live in tests/helpers/ (importable as top-level modules)."""

import os
import sys

# Quiet TensorFlow's C++ logging and keep each test worker to the machine's small share of cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
