"""What every ``eocap`` command runs inside: how it stops, what reaches the terminal, how it fails.

* SIGINT (Ctrl-C), SIGTERM and SIGHUP stop a command: they raise :class:`Stopped`, a
  ``KeyboardInterrupt``, in the main thread (SIGINT too when the command was started with it
  ignored, as a shell's background job is), so every ``with`` block unwinds and the servers a
  command started (``eocap serve-demo``, ``eocap demo``) and Prefect's temporary server are
  stopped. A second signal while that happens ends the process at once.
* Without ``--debug``, Prefect's reports of a failed flow or task run (each with a traceback)
  stay off the terminal, and nothing logged shows a traceback there; a run's log file
  (``output.dir/logs/``, :meth:`Session.run_log`) gets every record, tracebacks included.
* A command that fails prints one line (:meth:`Session.fail`): what failed and what to do. The
  traceback goes to the run's log file, and with ``--debug`` to the terminal too.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import errno
import logging
import os
import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape
from rich.traceback import Traceback

from pipeline.core.errors import ConfigError, DiskFullError, EocapError
from pipeline.dataset.layout import DatasetLayout

__all__ = ["EXIT_ALL_FAILED", "EXIT_CONFIG", "EXIT_FAILED", "Session", "Stopped"]

EXIT_FAILED = 1
"""Exit code of a command that failed (an error, a full disk)."""
EXIT_CONFIG = 2
"""Exit code of a command refused for its config or arguments, before any work."""
EXIT_ALL_FAILED = 3
"""Exit code of a run that finished with every sample failed."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a command cleanly."""


class Stopped(KeyboardInterrupt):
    """The command was told to stop by a signal (:data:`STOP_SIGNALS`).

    Attributes:
        signum: The signal.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first of :data:`STOP_SIGNALS` raises :class:`Stopped`.

    Handlers can only be set from the main thread; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def stop(signum: int, frame: FrameType | None) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_DFL)
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback or stack."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        plain = copy.copy(record)  # the record goes on to other handlers (the log file) whole
        plain.exc_info = plain.exc_text = plain.stack_info = None
        return self.inner.format(plain)


def _not_a_failure_report(record: logging.LogRecord) -> bool:
    """Whether a record is not Prefect's report of a failed run (the CLI says it once)."""
    return not (record.name.startswith("prefect") and record.levelno >= logging.ERROR)


class _LogFile(logging.FileHandler):
    """A log file made with its folder on the first record, that never complains.

    On a full disk its records are dropped silently: the terminal shows the error that matters.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, making the log's folder first if need be."""
        with contextlib.suppress(OSError):
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Drop the record."""


class Session:
    """One ``eocap`` command: its terminal, its run's log file, its one-line failure.

    Args:
        argv: The command's arguments (after ``eocap``), to tell the user what to run again.
        debug: Show tracebacks and Prefect's own failure reports on the terminal.
    """

    def __init__(self, argv: Sequence[str], *, debug: bool = False) -> None:
        self.argv = [arg for arg in argv if arg != "--debug"]
        self.debug = debug
        self.log: Path | None = None
        self.console = Console(stderr=True, soft_wrap=True)
        self._quieted: list[tuple[logging.Handler, logging.Formatter | None]] = []

    @property
    def command(self) -> str:
        """The command line, as the user would type it again."""
        return shlex.join(["eocap", *self.argv])

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for handler, formatter in self._quieted:
            handler.setFormatter(formatter)
            handler.removeFilter(_not_a_failure_report)
        self._quieted.clear()

    def use_prefect(self) -> None:
        """Import and set up Prefect for this command: quiet, local, its terminal as asked."""
        # Prefect's temporary server needs ~17 s to start on 2 cores; its default limit is 20 s.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_UI_ENABLED", "false")
        from prefect.logging.configuration import ensure_logging_setup
        from prefect.logging.handlers import PrefectConsoleHandler

        ensure_logging_setup()  # the handlers to quiet; importing prefect later keeps them
        if self.debug:
            return
        for handler in logging.getLogger().handlers:
            if isinstance(handler, PrefectConsoleHandler) and all(
                h is not handler for h, _ in self._quieted
            ):
                self._quieted.append((handler, handler.formatter))
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
                handler.addFilter(_not_a_failure_report)

    @contextlib.contextmanager
    def run_log(self, output_dir: Path) -> Iterator[Path]:
        """Log every record of the block, and its failure's traceback, to a new file of the run.

        The file is ``output_dir/logs/eocap-<UTC time>.log``
        (:meth:`~pipeline.dataset.layout.DatasetLayout.log_path`), made when the first record
        comes (a run without warnings or errors leaves none).
        """
        path = DatasetLayout(output_dir).log_path(dt.datetime.now(dt.UTC))
        handler = _LogFile(path, delay=True, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        self.log = path
        try:
            yield path
        except BaseException as exc:
            failed = f"`{self.command}` failed"
            cause = (type(exc), exc, exc.__traceback__)
            handler.handle(logging.LogRecord("eocap", logging.ERROR, "", 0, failed, None, cause))
            raise
        finally:
            root.removeHandler(handler)
            handler.close()

    def fail(self, exc: BaseException) -> int:
        """Print what failed as one line (with ``--debug``, the traceback first); the exit code."""
        if isinstance(exc, KeyboardInterrupt):
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            self.console.print(f"stopped by {signal.Signals(signum).name}", markup=False)
            return 128 + signum
        if self.debug:
            self.console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__))
        code, message = _explain(exc, self.command)
        if not isinstance(exc, EocapError | OSError) and not self.debug:
            # Not a failure eocap foresaw: where to see how it came about.
            logged = f"the traceback is in {self.log}; " if self.log else ""
            debug = shlex.join(["eocap", "--debug", *self.argv])
            message += f" ({logged}`{debug}` prints it)"
        self.console.print(f"[bold red]error:[/bold red] {escape(message)}")
        return code


def _explain(exc: BaseException, command: str) -> tuple[int, str]:
    """The exit code and the line that says what failed."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, DiskFullError):
        return EXIT_FAILED, f"{exc}: `{command}`"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return EXIT_FAILED, f"the disk is full{where}: free some space and run `{command}` again"
    if isinstance(exc, EocapError):
        return EXIT_FAILED, str(exc)
    return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
