"""`python -m ondevice_vision.eval` is `ondevice-eval`."""

from ondevice_vision.eval.main import run

run()
