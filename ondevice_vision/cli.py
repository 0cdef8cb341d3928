"""What every command-line tool shares: `--help` that shows the tool's own flags, and errors that
end the run as one line.

    ondevice-eval --help          # this tool's flags, exit status 0
    ondevice-eval ...             # a bad file or key: `ERROR: <file or key>: <problem>`, status 1
    ondevice-eval ... --debug     # the same failure with its full traceback

absl's own --help lists only the flags of the `__main__` module (none, for an installed console
script) and exits with status 1; a traceback of 24-99 lines buries the one sentence a user needs.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags

FLAGS = flags.FLAGS
HELP_FLAGS = ("--help", "-h", "--helpshort", "-?")


def _define_debug() -> None:
    if "debug" not in FLAGS:
        flags.DEFINE_boolean("debug", False, "Show the full traceback of an error.")


def error_line(error: BaseException) -> str:
    """One line: the message (which names the file or key), newlines folded."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, KeyError) and error.args:
        message = f"missing key {error.args[0]!r}"
    return "ERROR: " + " ".join(message.split())


def _print_help(module: str) -> None:
    doc = (sys.modules[module].__doc__ or "").strip()
    if doc:
        print(doc, end="\n\n")
    print(f"Flags of {module}:")
    print(FLAGS.module_help(module))
    print(FLAGS.module_help(__name__))


def flag_error_line(error: Exception, argv) -> str:
    """absl reports a broken config file or argument with the whole traceback inside the
    message; keep its last sentence and name the --config argument it came from."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Pass --help")]
    last = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1] if lines else str(error))
    config = ([a for a in argv[1:] if a.startswith("--config=")] or [None])[-1]
    where = f"{config}: " if config and "--config" in str(error) else ""
    return f"ERROR: {where}{last}"


def parse_flags(argv):
    """FLAGS(argv) with one-line errors (exit status 1) instead of absl's usage dump."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(flag_error_line(e, argv) + "\n")
        sys.exit(1)


def run(main, flags_parser=None) -> None:
    """`app.run(main)` with the tool's own --help and one-line errors (see the module doc)."""
    module = main.__module__  # "__main__" under `python -m`: its flags are defined there
    _define_debug()
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        _print_help(module)
        sys.exit(0)

    def guarded(argv):
        try:
            return main(argv)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - every failure (usage ones too) is one line
            if FLAGS.debug:
                raise
            sys.stderr.write(error_line(e) + "\n")
            sys.exit(1)

    app.run(guarded, flags_parser=flags_parser or parse_flags)
