"""Library warnings and logs go to the run's log file, not the terminal.

transformers, trl, datasets, torch and the libraries under them report deprecations and notes through
Python's ``warnings`` and ``logging``, several through a handler of their own that writes to the
terminal. Inside :func:`library_log` all of it is appended to ``log.txt`` in the command's output folder
instead, so the terminal shows only the command's own progress bars, results and errors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = "log.txt"


@contextmanager
def library_log(folder: str | Path) -> Iterator[Path]:
    """Append Python warnings and every library's log records to ``folder/log.txt`` while the block runs.

    Records reach the file through a handler on the root logger; the terminal handlers that libraries
    installed for themselves (transformers, datasets, torch: on import, which may happen inside the block)
    are pointed at the file before each record is handled, and back at the terminal afterwards."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_FILE
    root = logging.getLogger()
    make_record = logging.getLogRecordFactory()
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        terminals = {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}
        moved: dict[logging.StreamHandler, tuple[object, logging.Formatter | None]] = {}

        def to_log() -> None:
            loggers = [root, *(v for v in list(logging.root.manager.loggerDict.values()) if isinstance(v, logging.Logger))]
            for logger in loggers:
                for library_handler in logger.handlers:
                    if isinstance(library_handler, logging.StreamHandler) and library_handler.stream in terminals:
                        moved[library_handler] = library_handler.setStream(log), library_handler.formatter
                        library_handler.setFormatter(handler.formatter)

        def record_to_log(*args, **kwargs) -> logging.LogRecord:
            to_log()  # a library imported since the last record may have installed its terminal handler
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
            for library_handler, (terminal, formatter) in moved.items():
                library_handler.setStream(terminal)
                library_handler.setFormatter(formatter)
