"""Library warnings and logs go to the run's log file, not the terminal.

transformers, trl, datasets, torch and the libraries under them report deprecations and notes through
Python's ``warnings`` and ``logging``, several through a console handler of their own. Inside
:func:`library_log` all of it is appended to ``log.txt`` in the command's output folder instead, so the
terminal shows only the command's own progress bars, results and errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = "log.txt"


class _LogFile:
    """The log file as a stream, created (with its folder) on the first write: a command that validates its
    output folder first still does, and a run without a library message leaves no empty log behind."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def write(self, text: str) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed by close())
        self.file.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@contextmanager
def library_log(folder: str | Path) -> Iterator[Path]:
    """Append Python warnings and every library's log records to ``folder/log.txt`` while the block runs
    (the file is created with the first of them); yields the file's path.

    Records reach the file through a handler on the root logger. The console handlers that libraries
    install for themselves (transformers, datasets, dill, torch; on import, which may happen inside the
    block) are taken off their loggers before each record is handled, the file's handler standing in for
    them where the logger does not pass records on to the root, and put back afterwards."""
    path = Path(folder) / LOG_FILE
    log = _LogFile(path)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    make_record = logging.getLogRecordFactory()
    taken: list[tuple[logging.Logger, logging.Handler]] = []  # (logger, its console handler)

    def to_log() -> None:
        consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        loggers = [root, *(v for v in list(logging.root.manager.loggerDict.values()) if isinstance(v, logging.Logger))]
        for logger in loggers:
            for console in list(logger.handlers):
                if (isinstance(console, logging.StreamHandler) and console is not handler
                        and any(console.stream is stream for stream in consoles)):
                    logger.removeHandler(console)
                    if not logger.propagate:
                        logger.addHandler(handler)
                    taken.append((logger, console))

    def record_to_log(*args, **kwargs) -> logging.LogRecord:
        to_log()  # a library imported since the last record may have installed its console handler
        return make_record(*args, **kwargs)

    to_log()
    root.addHandler(handler)
    logging.setLogRecordFactory(record_to_log)
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        logging.setLogRecordFactory(make_record)
        root.removeHandler(handler)
        for logger, console in taken:
            logger.removeHandler(handler)
            logger.addHandler(console)
        log.close()
