"""One JSON object per stderr line for every process of the farm, whoever logs it.

structlog events and standard-library records (aiohttp, botocore, the Kubernetes client, asyncio, the project's
own `logging.getLogger(__name__)` users) go through one `ProcessorFormatter`, so `kubectl logs` can be parsed
line by line with the same keys: event, level, timestamp, logger, bound context (recording id…) and exception.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

import structlog

# Below WARNING these log every request, retry or poll; they only help when debugging. aiohttp.access is among
# them because health checks every few seconds would bury the lines operators need.
CHATTY_LOGGERS = (
    "aiohttp.access",
    "asyncio",
    "boto3",
    "botocore",
    "kubernetes_asyncio.client.rest",
    "s3transfer",
    "urllib3",
)

_SHARED = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
)


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, so redirections made after configuration (pytest's capsys) still see it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A crash is logged like everything else, so its traceback is not the one plain-text block in the stream."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(kind, value, tb))


def configure_logging(level: str = "info") -> None:
    """Safe to call again (tests, CLIs): it replaces its own handler and leaves others' (pytest's) in place.

    The level applies to structlog and stdlib loggers alike; CHATTY_LOGGERS stay at WARNING unless it is debug.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught

    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
