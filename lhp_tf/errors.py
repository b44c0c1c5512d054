"""User-facing errors: bad input is reported as one clear line, not a traceback.

Raise :class:`LhpError` (or a subclass) with a message that names the file, the line and
what was wrong. ``lhp`` and every ``python -m lhp_tf.X`` entry print it and exit with 2.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class LhpError(Exception):
    """An error caused by the user's input (a file, a flag, a recipe), not by a bug."""


def run_main(main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None,
             prog: str = "lhp") -> int:
    """Call a subcommand's ``main`` and turn :class:`LhpError` into a message and exit code 2.

    ``argv=None`` means a command-line entry (``lhp``, ``python -m lhp_tf.X``): the arguments
    come from ``sys.argv`` and TensorFlow's native start-up noise is filtered out of stderr
    (:mod:`lhp_tf.quiet`) unless ``--verbose`` is among them or ``LHP_VERBOSE=1``.
    ``--verbose`` is removed before ``main`` sees the arguments.
    """
    from lhp_tf.quiet import filter_native_logs, verbose_requested

    verbose, args = verbose_requested(list(sys.argv[1:] if argv is None else argv))
    if argv is None and not verbose:
        filter_native_logs()
    try:
        return int(main(args) or 0)
    except LhpError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
