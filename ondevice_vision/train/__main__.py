"""`python -m ondevice_vision.train` is `ondevice-train`."""

from ondevice_vision.train.main import run

run()
