"""Equality with the TF1 Object Detection API and slim, run in a subprocess of its own."""
