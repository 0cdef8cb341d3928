import os

# Quiet TensorFlow's C++ logging and keep each test worker to the machine's small share of cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
