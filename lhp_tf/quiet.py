"""Hide TensorFlow's native start-up noise unless ``--verbose`` (or ``LHP_VERBOSE=1``).

TensorFlow, XLA and LiteRT log from C++ straight to file descriptor 2: the oneDNN notice, the
CPU-instructions notice, "Could not find cuda drivers", "failed call to cuInit", absl's
"All log messages before absl::InitializeLog()" and the XNNPACK delegate notice. Several of
them ignore ``TF_CPP_MIN_LOG_LEVEL`` (absl logs before it is initialised), so the only reliable
filter is on the descriptor itself: :func:`filter_native_logs` points fd 2 at a pipe, drops the
lines that match :data:`NOISE` and passes everything else (our messages, warnings,
tracebacks) through unchanged. Child processes inherit the filtered descriptor.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: the flag every ``lhp`` command and ``python -m lhp_tf.X`` entry accepts
VERBOSE_FLAG = "--verbose"

#: lines of native start-up noise (absl-format I/W/E lines and the known one-line notices)
NOISE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|.*oneDNN custom operations are on.*"
    rb"|.*This TensorFlow binary is optimized to use available CPU instructions.*"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb")\r?$")


def verbose_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """``(verbose?, argv without --verbose)``; ``LHP_VERBOSE=1`` also asks for it."""
    verbose = VERBOSE_FLAG in argv or os.environ.get("LHP_VERBOSE", "") not in ("", "0")
    return verbose, [a for a in argv if a != VERBOSE_FLAG]


_SENTINEL = b"\x00lhp-native-log-filter-drained\x00"
_installed: list[bool] = []


def filter_native_logs() -> None:
    """Filter :data:`NOISE` out of fd 2 for the rest of this process (a command-line entry).

    Installed once per process, never undone: TensorFlow may keep its own copy of the
    descriptor, so the filter must outlive every writer. At exit everything written before is
    drained through the filter (a sentinel line marks the end), so no message is lost.
    """
    if _installed:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable fd 2 (a daemon, say): nothing to filter
        return
    drained = threading.Event()

    def pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as src:
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = []
                for line in lines:
                    if line == _SENTINEL:
                        drained.set()
                    elif not NOISE.match(line):
                        kept.append(line + b"\n")
                if kept:
                    os.write(saved, b"".join(kept))

    def drain() -> None:
        sys.stderr.flush()
        os.write(write_end, _SENTINEL + b"\n")
        drained.wait(timeout=5)

    threading.Thread(target=pump, name="lhp-native-log-filter", daemon=True).start()
    os.dup2(write_end, 2)
    atexit.register(drain)
    _installed.append(True)
