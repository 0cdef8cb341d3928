"""A workdir is the run's own: empty when the run starts, or one of ours (its marker file), or the
run refuses it in one line.

Training into a folder that holds other files would replace a `config.json` or `metrics.json` of
someone else's without a word, and `checkpoints/` housekeeping would move files around in it. The
first run writes `WORKDIR/.ondevice_workdir`; later runs (resuming, evaluating) find it. A folder
written before the marker existed is recognised by holding nothing but what runs write.
`--adopt_workdir` takes a folder with other files on purpose (the marker is written then).
"""

from __future__ import annotations

import os
import socket
import time

from ondevice_vision import files

MARKER = ".ondevice_workdir"
# What runs write at a workdir's top level (train, eval, import), for folders from before the marker.
RUN_NAMES = frozenset(
    {
        MARKER,
        "checkpoints",
        "config.json",
        "labels.json",
        "metrics.json",
        "train",
        "eval",
        "train.lock",
    }
)


def _written_by_a_run(name: str) -> bool:
    # Hidden names: temporary files of atomic writes and the workers' scratch folders.
    return name in RUN_NAMES or name.startswith(".")


def claim_workdir(workdir: str, adopt: bool = False) -> None:
    """Makes `workdir` ours (writing the marker), or raises FileExistsError naming the files that
    show it is not a run's folder (unless `adopt`)."""
    if files.is_remote(workdir):
        return  # object stores: no listing cost worth paying per start, and no users' homes
    marker = os.path.join(workdir, MARKER)
    if os.path.exists(marker):
        return
    entries = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []
    foreign = [e for e in entries if not _written_by_a_run(e)]
    if foreign and not adopt:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise FileExistsError(
            f"workdir {workdir}: holds files that are not a run's ({', '.join(foreign[:5])}{more}); "
            "give --workdir a new or empty folder, or pass --adopt_workdir to use this one"
        )
    os.makedirs(workdir, exist_ok=True)
    files.write_json(
        {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%c")}, marker
    )
