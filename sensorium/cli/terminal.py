"""What reaches a user's terminal: our own lines at the chosen verbosity, third-party noise only with ``-vv``.

"Ours" is what our code prints (``print`` to stdout or stderr) and the log records of our loggers
(``OURS``: ``sensorium.*``, ``models.*`` …). Everything else is a third party's and counts as debug
output, shown with ``-vv`` only (errors always show):

- log records of other libraries below ERROR (a filter on the one terminal handler);
- Python warnings raised outside our packages (mtcnn's ``SyntaxWarning``, insightface's
  ``FutureWarning`` …): logged to ``thirdparty.warnings`` at debug level;
- libraries that print banners through their own handlers are told not to before they are imported
  (``YOLO_VERBOSE=False`` for Ultralytics' export banners, ``TF_CPP_MIN_LOG_LEVEL`` for TensorFlow
  Lite, ``GLOG_minloglevel`` for glog);
- what C/C++ code writes straight to file descriptor 2 (absl's "All log messages before
  absl::InitializeLog()", TF Lite's "Created TensorFlow Lite XNNPACK delegate", onnxruntime's
  ``[W:onnxruntime…]``): for commands that load models in-process (``capture_native``), fd 2 becomes
  a pipe whose lines are logged to ``thirdparty.native`` (debug; ``E``/``F`` lines and fatal errors
  as errors), while Python's ``sys.stderr`` keeps writing to the terminal.

With ``-vv`` nothing is hidden or redirected: every library prints as it would on its own.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import io
import logging
import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import TextIO

#: Top-level names of our own code: its loggers and the files its warnings come from.
OURS = ("sensorium", "pipeline", "models", "nodes", "edge", "bridges", "evaluation", "benchmarks", "bench")
_ROOT = Path(__file__).resolve().parents[2]  # sensorium/cli/terminal.py → the checkout
_OUR_DIRS = tuple(str(_ROOT / name) + os.sep for name in OURS)
#: Environment set before any model library is imported, unless the user set it (or asked for -vv).
QUIET_ENV = {
    "YOLO_VERBOSE": "False",  # Ultralytics: no export/predict banners
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow (Lite): errors only
    "GLOG_minloglevel": "2",  # glog (mediapipe): errors only
}
_SEVERE = re.compile(r"^[EF]\d{4} |\[[EF]:|\b(ERROR|FATAL|Fatal Python error|Segmentation fault)\b")

log = logging.getLogger("sensorium.terminal")


def ours(logger_name: str) -> bool:
    """True for a logger of our own code."""
    return logger_name.split(".", 1)[0] in OURS


class ThirdPartyIsDebug(logging.Filter):
    """On the terminal handler: another library's records below ERROR pass only at debug verbosity."""

    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose >= 2 or record.levelno >= logging.ERROR or ours(record.name)


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    if str(Path(filename).resolve()).startswith(_OUR_DIRS):
        logging.getLogger("sensorium.warnings").warning("%s", text)
    else:
        logging.getLogger("thirdparty.warnings").debug("%s", text)


class _NativeStderr:
    """fd 2 → a pipe read by a thread that logs each line; ``sys.stderr`` keeps the terminal."""

    def __init__(self) -> None:
        self.terminal_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        sys.stderr.flush()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.terminal = io.TextIOWrapper(
            io.FileIO(self.terminal_fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
        )
        self.terminal.reconfigure(line_buffering=True)
        self.reader = threading.Thread(target=self._read, args=(read_fd,), name="native-stderr", daemon=True)
        self.reader.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Give fd 2 back to the terminal and let the reader log what is left in the pipe."""
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            os.dup2(self.terminal_fd, 2)  # the pipe's last writer closes: the reader sees its end
        self.reader.join(timeout=2.0)

    @staticmethod
    def _read(fd: int) -> None:
        native = logging.getLogger("thirdparty.native")
        with open(fd, "rb", closefd=True) as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    native.log(logging.ERROR if _SEVERE.search(line) else logging.DEBUG, "%s", line)


_native: _NativeStderr | None = None


def setup(verbose: int, *, capture_native: bool = False) -> None:
    """Configure logging for a command at ``verbose`` (0: warnings, 1: info, 2: debug and third-party output).

    Call it before anything imports a model library. ``capture_native`` (commands that load models in
    this process) also takes file descriptor 2 from C/C++ code; not for commands that start other
    processes, which would inherit the pipe.
    """
    global _native
    if verbose < 2:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
    root = logging.getLogger()
    if root.handlers:
        return  # called inside a program that owns logging and the terminal already (tests, embedding)
    if verbose < 2:
        if capture_native and _native is None and _is_fd(2):
            _native = _NativeStderr()
            sys.stderr = _native.terminal
            faulthandler.enable(file=_native.terminal)  # a native crash still reaches the terminal
        warnings.showwarning = _showwarning
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ThirdPartyIsDebug(verbose))
    root.addHandler(handler)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))


def _is_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
