"""`python -m ondevice_vision.export` is `ondevice-export`."""

from ondevice_vision.export.main import run

run()
