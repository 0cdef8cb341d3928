"""Code several test modules share (models, subprocess runs of the CLIs, runtime checks)."""
