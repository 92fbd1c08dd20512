"""Which store ORCHESTRATOR_DB names: a SQLite file (the default) or a PostgreSQL server.

Also how a PostgreSQL DSN is told apart, checked and shown: it may carry a password, so anything that
logs it or puts it into a message uses `redact_dsn`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

if TYPE_CHECKING:
    from orchestrator.config import OrchestratorSettings
    from orchestrator.store.base import RecordingStore

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_dsn(value: str) -> bool:
    return value.partition("://")[0].lower() in POSTGRES_SCHEMES and "://" in value


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (in the user part or as a `password=` parameter)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<an unreadable DSN>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, colon, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if colon else f"{name}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}"
        for key, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with a PostgreSQL DSN, said without its password; None when it can be used."""
    shown = redact_dsn(dsn)
    example = "postgresql://user:password@host:5432/database"
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        return f"{shown} is not a valid DSN ({exc}); write it as {example}"
    hosts = parts.hostname or parse_qs(parts.query).get("host")
    if not hosts:
        return f"{shown} names no server; write it as {example}"
    if port == 0:
        return f"{shown} has port 0; give the server's port (PostgreSQL's default is 5432)"
    database = parts.path.lstrip("/")
    if "/" in database:
        return f"{shown}: the database name {database!r} has a '/'; write it as {example}"
    return None


def open_store(settings: OrchestratorSettings) -> RecordingStore:
    """The store the settings name, not yet opened (the caller `open()`s it)."""
    if settings.db_url is not None:
        from orchestrator.store.postgres import PostgresStore

        return PostgresStore(settings.db_url, pool_size=settings.db_pool_size)
    from orchestrator.store.sqlite import SQLiteStore

    return SQLiteStore(settings.db_path, settings.db_synchronous)
