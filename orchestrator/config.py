"""Orchestrator configuration, in one place.

Every field is read from the environment variable named in its alias and can be overridden by the
matching `orchestrator serve --flag` (the flag is the field name with dashes, see `cli.py`). Names
shared with the recorder (RECORDS_DIR, S3_*, WORKER_TOKEN) mean the same thing on both sides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.actions import ALLOW_EVALUATE_ENV
from contract.envcheck import URL_ALLOWLIST_HELP, CommaList, UrlAllowlist
from contract.spec import MAX_READINESS_WAIT


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


# A caller's name: it owns recordings, scopes idempotency keys and picks a webhook secret.
CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ADMIN = "admin"
# The caller of an API with no tokens (loopback only); no named caller may take it and inherit its rows.
ANONYMOUS = "anonymous"


def derived_name(token: str) -> str:
    """The name of a bare token (no `name:`): stable, and saying nothing about the token."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def named_entries(entries: list[str], variable: str, what: str) -> dict[str, str]:
    """`name:value` entries (a bare `value` gets a derived name) as {name: value}; ValueError names the
    variable and the entry to fix."""
    named: dict[str, str] = {}
    for position, entry in enumerate(entries, start=1):
        name, sep, value = entry.partition(":")
        name, value = (name.strip(), value.strip()) if sep else (derived_name(entry), entry)
        if not value:
            raise ValueError(f"{variable} entry {position} ({name!r}) has no {what} after the ':'")
        if not CALLER_NAME.fullmatch(name):
            raise ValueError(
                f"{variable} entry {position}: name {name!r} must be 1-64 letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        if name in (ADMIN, ANONYMOUS):
            owner = "API_ADMIN_TOKEN" if name == ADMIN else "the caller of an API with no tokens"
            raise ValueError(f"{variable} entry {position}: the name {name!r} is reserved for {owner}")
        if name in named:
            raise ValueError(f"{variable} names {name!r} twice; every caller needs its own name")
        named[name] = value
    return named


WEBHOOK_SECRET_PREFIX = "whsec_"


def whsec_key(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret; like the standard's libraries, padding may be left out.
    Raises binascii.Error when it is not base64."""
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def whsec_problem(secret: str) -> str | None:
    """What is wrong with a `whsec_<base64>` secret (Standard Webhooks), or None; any other string is used
    as its UTF-8 bytes."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return None
    try:
        key = whsec_key(secret)
    except (binascii.Error, ValueError):
        return "a secret starting with whsec_ must be base64 after the prefix (Standard Webhooks)"
    if len(key) < 16:
        return "a whsec_ secret must decode to at least 16 bytes (24 to 64 are usual)"
    return None


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")

    # HTTP
    host: str = Field(default="127.0.0.1", validation_alias=_env("ORCHESTRATOR_HOST"), description="bind address")
    port: int = Field(default=8080, ge=0, le=65535, validation_alias=_env("ORCHESTRATOR_PORT"))
    api_tokens: CommaList = Field(
        default_factory=list,
        validation_alias=_env("API_TOKENS"),
        description="bearer tokens for the public API, comma-separated `name:token` (a bare token is named"
        " token-<8 hex of its sha256>); each name sees only its own recordings",
    )
    api_admin_token: str | None = Field(
        default=None,
        validation_alias=_env("API_ADMIN_TOKEN"),
        description="bearer token that sees and acts on every caller's recordings",
    )
    worker_token: str | None = Field(
        default=None, validation_alias=_env("WORKER_TOKEN"), description="bearer token for /v1/worker/*"
    )
    url_allowlist: UrlAllowlist = Field(
        default_factory=list, validation_alias=_env("URL_ALLOWLIST"), description=URL_ALLOWLIST_HELP
    )

    # storage
    records_dir: Path = Field(default=Path("records"), validation_alias=_env("RECORDS_DIR"))
    state_dir: Path = Field(
        default=Path("state"),
        validation_alias=_env("ORCHESTRATOR_STATE_DIR"),
        description="the orchestrator's own files (the SQLite store); keep it outside RECORDS_DIR",
    )
    db: str | None = Field(
        default=None,
        validation_alias=_env("ORCHESTRATOR_DB"),
        description="the store: a SQLite file (default ORCHESTRATOR_STATE_DIR/orchestrator.db), or a PostgreSQL"
        " server as postgresql://user:password@host:5432/database, which several orchestrators can share",
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        validation_alias=_env("ORCHESTRATOR_DB_POOL_SIZE"),
        description="connections this orchestrator keeps open to PostgreSQL (unused with SQLite)",
    )
    db_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        validation_alias=_env("ORCHESTRATOR_DB_SYNCHRONOUS"),
        description="FULL: a transition survives power loss once acknowledged; NORMAL: survives a process crash",
    )
    s3_bucket: str | None = Field(default=None, validation_alias=_env("S3_BUCKET"))
    s3_prefix: str = Field(default="recordings", validation_alias=_env("S3_PREFIX"))
    s3_endpoint_url: str | None = Field(default=None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_bucket_allowlist: CommaList = Field(
        default_factory=list,
        validation_alias=_env("S3_BUCKET_ALLOWLIST"),
        description="buckets a request's upload.bucket may name, comma-separated; default: S3_BUCKET only",
    )
    media_url_ttl: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600, validation_alias=_env("ORCHESTRATOR_MEDIA_URL_TTL")
    )
    records_retention_days: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("RECORDS_RETENTION_DAYS"),
        description="purge recordings stored in RECORDS_DIR this many days after they ended (their files;"
        " the row stays, marked purged); unset: keep them for ever. S3 objects are left to bucket lifecycle rules",
    )
    records_retention_delete_rows: bool = Field(
        default=False,
        validation_alias=_env("RECORDS_RETENTION_DELETE_ROWS"),
        description="with RECORDS_RETENTION_DAYS, delete the store rows of recordings ended that long ago"
        " instead of keeping them as purged (S3 recordings' rows too; their objects stay to the lifecycle rules)",
    )
    housekeeping_interval: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_HOUSEKEEPING_INTERVAL"),
        description="seconds between two retention passes (the first runs at start)",
    )

    # recordings
    max_duration: float = Field(
        default=4 * 3600.0,
        gt=0,
        le=24 * 3600.0,
        validation_alias=_env("ORCHESTRATOR_MAX_DURATION"),
        description="upper bound in seconds for a request's max_duration",
    )
    default_duration: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_DEFAULT_DURATION"),
        description="max_duration when a request gives none (capped by max_duration)",
    )
    max_waiting: float = Field(
        default=1800.0,
        gt=0,
        le=MAX_READINESS_WAIT,
        validation_alias=_env("ORCHESTRATOR_MAX_WAITING"),
        description="upper bound in seconds for a waiting room: wait_for.timeout of kind selector or signal",
    )
    actions_allow_evaluate: bool = Field(
        default=False,
        validation_alias=_env(ALLOW_EVALUATE_ENV),
        description="accept join scripts with `evaluate` steps (JavaScript in the page); the recorders read"
        " the same variable",
    )

    # leases
    # Four missed heartbeats; with the 2 s check a dead worker is noticed within 14 s.
    lease_ttl: float = Field(default=12.0, gt=0, validation_alias=_env("ORCHESTRATOR_LEASE_TTL"))
    heartbeat_interval: float = Field(default=3.0, gt=0, validation_alias=_env("ORCHESTRATOR_HEARTBEAT_INTERVAL"))
    lease_check_interval: float = Field(default=2.0, gt=0, validation_alias=_env("ORCHESTRATOR_LEASE_CHECK_INTERVAL"))
    max_attempts: int = Field(default=3, ge=1, validation_alias=_env("ORCHESTRATOR_MAX_ATTEMPTS"))
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        validation_alias=_env("ORCHESTRATOR_SHUTDOWN_GRACE"),
        description="on SIGTERM, how long running recordings may go on before they are told to stop",
    )
    shutdown_stop_wait: float = Field(
        default=60.0,
        ge=0,
        validation_alias=_env("ORCHESTRATOR_SHUTDOWN_STOP_WAIT"),
        description="after telling recordings to stop, how long to wait for their reports",
    )

    # webhooks
    webhook_secret: str | None = Field(
        default=None,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_SECRET"),
        description="signs every webhook (Standard Webhooks): `whsec_<base64>` is the decoded key, any other"
        " string its UTF-8 bytes",
    )
    webhook_secrets: CommaList = Field(
        default_factory=list,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_SECRETS"),
        description="per-caller webhook secrets, comma-separated `name:secret`; others use ORCHESTRATOR_WEBHOOK_SECRET",
    )
    webhook_horizon: float = Field(
        default=86400.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_HORIZON"),
        description="seconds after its state change an event is still retried; after that it is given up (failed)",
    )
    webhook_attempts: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_ATTEMPTS"),
        description="give an event up after this many attempts; unset: ORCHESTRATOR_WEBHOOK_HORIZON alone decides",
    )
    webhook_backoff: float = Field(
        default=1.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_BACKOFF"),
        description="first retry delay in seconds; doubles per attempt, with jitter, up to"
        " ORCHESTRATOR_WEBHOOK_MAX_BACKOFF",
    )
    webhook_max_backoff: float = Field(
        default=900.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_MAX_BACKOFF"),
        description="longest delay in seconds between two attempts of one event",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_TIMEOUT"),
        description="seconds one attempt may take, from connecting to the whole answer",
    )
    webhook_concurrency: int = Field(
        default=128,
        ge=1,
        le=1024,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_CONCURRENCY"),
        description="webhook attempts in flight at once, in all; keep it well above"
        " ORCHESTRATOR_WEBHOOK_PER_DESTINATION, so many hanging receivers cannot take every slot",
    )
    webhook_per_destination: int = Field(
        default=4,
        ge=1,
        le=1024,
        validation_alias=_env("ORCHESTRATOR_WEBHOOK_PER_DESTINATION"),
        description="webhook attempts in flight at once to one destination (host[:port] of the webhook_url)",
    )

    @field_validator("webhook_attempts", mode="before")
    @classmethod
    def _empty_attempts(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _webhooks_signed(self) -> OrchestratorSettings:
        """Every signing secret must be usable, and on Kubernetes every caller's webhooks must be signed:
        an unsigned event is one a receiver cannot tell from a forgery."""
        secrets = {"ORCHESTRATOR_WEBHOOK_SECRET": self.webhook_secret} if self.webhook_secret else {}
        for name, secret in named_entries(self.webhook_secrets, "ORCHESTRATOR_WEBHOOK_SECRETS", "secret").items():
            secrets[f"ORCHESTRATOR_WEBHOOK_SECRETS ({name})"] = secret
        for where, secret in secrets.items():
            problem = whsec_problem(secret)
            if problem:
                raise ValueError(f"{where}: {problem}")
        unsigned = self.unsigned_webhook_callers
        if unsigned and self.on_kubernetes:
            raise ValueError(
                f"webhooks of {', '.join(unsigned)} would go out unsigned, which is refused on Kubernetes: set"
                " ORCHESTRATOR_WEBHOOK_SECRET (every caller), or give each of them an entry in"
                " ORCHESTRATOR_WEBHOOK_SECRETS"
            )
        return self

    @property
    def on_kubernetes(self) -> bool:
        """POOL_BACKEND=kubernetes, or running in a pod (KUBERNETES_SERVICE_HOST is set)."""
        return self.pool_backend == "kubernetes" or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    @property
    def unsigned_webhook_callers(self) -> list[str]:
        """Callers whose webhook_url would receive unsigned events (no secret of theirs, no shared one)."""
        if self.webhook_secret:
            return []
        names = list(self.callers) or ([] if self.api_admin_token else [ANONYMOUS])
        if self.api_admin_token:
            names.append(ADMIN)
        secrets = named_entries(self.webhook_secrets, "ORCHESTRATOR_WEBHOOK_SECRETS", "secret")
        return [name for name in names if name not in secrets]

    # pool
    pool_backend: Literal["local", "kubernetes", "none"] = Field(
        default="local",
        validation_alias=_env("POOL_BACKEND"),
        description="local: worker subprocesses; kubernetes: recorder pods; none: workers are started elsewhere",
    )
    pool_min: int = Field(default=0, ge=0, validation_alias=_env("POOL_MIN"))
    pool_max: int = Field(default=4, ge=0, validation_alias=_env("POOL_MAX"))
    pool_spare: int = Field(default=1, ge=0, validation_alias=_env("POOL_SPARE"))
    pool_predictive: bool = Field(
        default=False,
        validation_alias=_env("POOL_PREDICTIVE"),
        description="size the spare from recent arrivals and the hourly pattern (POOL_SPARE is then the floor)",
    )
    pool_idle_cooldown: float = Field(
        default=60.0,
        ge=0,
        validation_alias=_env("POOL_IDLE_COOLDOWN"),
        description="seconds a surplus worker stays idle before it is retired",
    )
    pool_start_timeout: float = Field(
        default=180.0,
        gt=0,
        validation_alias=_env("POOL_START_TIMEOUT"),
        description="a new worker that has not asked for work this long after it was started is replaced",
    )
    pool_capacity: int | None = Field(
        default=None,
        ge=1,
        validation_alias=_env("POOL_CAPACITY"),
        description="most recordings leased at once across all workers; unset: what this machine's cores"
        " sustain with the local pool, no limit otherwise",
    )

    # the replay page (orchestrator/replay/)
    view_secret: str | None = Field(
        default=None,
        validation_alias=_env("ORCHESTRATOR_VIEW_SECRET"),
        description="key that signs the replay page's links (GET /v1/recordings/{id}/view); unset: a random key"
        " per process, so links die with it. Required with several replicas: each must accept the others' links",
    )
    view_link_ttl: float = Field(
        default=900.0,
        ge=10,
        le=24 * 3600.0,
        validation_alias=_env("ORCHESTRATOR_VIEW_LINK_TTL"),
        description="seconds a signed replay or list link stays valid",
    )
    region: str = Field(
        default="local",
        validation_alias=_env("REGION"),
        description="where this installation runs (the site ConfigMap's REGION): a label of the WebRTC quality metrics",
    )
    pool_name: str = Field(
        default="local",
        validation_alias=_env("POOL_NAME"),
        description="the worker pool's name (the Kubernetes backend's POOL_NAME): a label of the WebRTC quality"
        " metrics",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=_env("ORCHESTRATOR_LOG_LEVEL")
    )

    @field_validator(
        "worker_token",
        "api_admin_token",
        "webhook_secret",
        "s3_bucket",
        "s3_endpoint_url",
        "view_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pool_capacity", "records_retention_days", mode="before")
    @classmethod
    def _empty_number(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _secure_when_exposed(self) -> OrchestratorSettings:
        # Without tokens the API is open, which is only acceptable when nobody else can reach it.
        callers = self.callers  # raises with the entry to fix
        secrets = named_entries(self.webhook_secrets, "ORCHESTRATOR_WEBHOOK_SECRETS", "secret")
        unknown = sorted(set(secrets) - set(callers) - {ADMIN})
        if unknown:
            raise ValueError(
                f"ORCHESTRATOR_WEBHOOK_SECRETS names {', '.join(unknown)}, which API_TOKENS does not;"
                f" callers: {', '.join(sorted(callers)) or 'none'}"
            )
        tokens = list(callers.values()) + [t for t in (self.api_admin_token, self.worker_token) if t]
        if len(set(tokens)) != len(tokens):
            raise ValueError(
                "API_TOKENS, API_ADMIN_TOKEN and WORKER_TOKEN share a token; give every caller and the workers"
                " their own"
            )
        if not self.is_loopback:
            missing = [
                name
                for name, value in (
                    ("API_TOKENS", self.api_tokens or self.api_admin_token),
                    ("WORKER_TOKEN", self.worker_token),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"ORCHESTRATOR_HOST={self.host} is reachable from other machines: set {' and '.join(missing)}"
                    " (or bind to 127.0.0.1)"
                )
        if any(part in (".", "..") for part in self.s3_prefix.split("/")) or not self.s3_prefix.isprintable():
            raise ValueError(f"S3_PREFIX {self.s3_prefix!r} has a '.' or '..' segment or a control character")
        if self.view_secret is not None and len(self.view_secret) < 16:
            raise ValueError("ORCHESTRATOR_VIEW_SECRET must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        for name, value in (("REGION", self.region), ("POOL_NAME", self.pool_name)):
            if not CALLER_NAME.fullmatch(value):
                raise ValueError(f"{name}={value!r}: use 1-64 letters, digits, '.', '_' or '-' (it labels metrics)")
        if self.pool_min > self.pool_max:
            raise ValueError(f"POOL_MIN ({self.pool_min}) is above POOL_MAX ({self.pool_max})")
        return self

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def callers(self) -> dict[str, str]:
        """API callers by name: {name: token}."""
        return named_entries(self.api_tokens, "API_TOKENS", "token")

    @property
    def caller_webhook_secrets(self) -> dict[str, str]:
        return named_entries(self.webhook_secrets, "ORCHESTRATOR_WEBHOOK_SECRETS", "secret")

    @property
    def allowed_buckets(self) -> list[str]:
        """Buckets an upload may go to: S3_BUCKET_ALLOWLIST, else the configured S3_BUCKET."""
        if self.s3_bucket_allowlist:
            return list(self.s3_bucket_allowlist)
        return [self.s3_bucket] if self.s3_bucket else []

    @field_validator("db", mode="before")
    @classmethod
    def _store_location(cls, value: Any) -> str | None:
        """A SQLite path (a Path is taken as given) or a PostgreSQL DSN, refused here when it cannot work."""
        from orchestrator.store.factory import POSTGRES_SCHEMES, dsn_problem, is_postgres_dsn, redact_dsn

        if value is None or isinstance(value, os.PathLike):
            return None if value is None else os.fspath(value)
        if not isinstance(value, str):
            return value  # pydantic says what type it wants
        if not value.strip():
            return None
        if is_postgres_dsn(value):
            problem = dsn_problem(value)
            if problem:
                raise ValueError(problem)
        elif "://" in value:
            raise ValueError(
                f"{redact_dsn(value)} is neither a SQLite file path nor a PostgreSQL DSN"
                f" ({' or '.join(s + '://' for s in POSTGRES_SCHEMES)}...)"
            )
        return value

    @property
    def db_url(self) -> str | None:
        """The PostgreSQL DSN ORCHESTRATOR_DB names; None for SQLite. It may hold a password: log `db_label`."""
        from orchestrator.store.factory import is_postgres_dsn

        return self.db if self.db is not None and is_postgres_dsn(self.db) else None

    @property
    def replicated(self) -> bool:
        """True on PostgreSQL: other orchestrators may share this store (and must elect one leader)."""
        return self.db_url is not None

    @property
    def view_secret_problem(self) -> str | None:
        """Why `orchestrator serve` must not start with these replay-link settings, or None. Checked at start,
        not here, so settings for a store's tests need no secret."""
        if self.replicated and not self.view_secret:
            return (
                "ORCHESTRATOR_DB names a PostgreSQL server that several replicas may share: set"
                " ORCHESTRATOR_VIEW_SECRET (the same on every replica), so a replay link one replica signs is"
                " accepted by the others"
            )
        return None

    @property
    def db_label(self) -> str:
        """Where the store is, fit to log: the SQLite path or the DSN without its password."""
        from orchestrator.store.factory import redact_dsn

        return redact_dsn(self.db_url) if self.db_url is not None else str(self.db_path)

    @property
    def db_path(self) -> Path:
        """The SQLite file. There is none on PostgreSQL (see `db_url`)."""
        if self.db_url is not None:
            raise RuntimeError("ORCHESTRATOR_DB names a PostgreSQL server, not a SQLite file")
        return Path(self.db) if self.db is not None else self.state_dir / "orchestrator.db"

    @property
    def legacy_db_path(self) -> Path:
        """Where the store lived before ORCHESTRATOR_STATE_DIR: moved from there at start (see app.py)."""
        return self.records_dir / "orchestrator.db"

    @property
    def effective_default_duration(self) -> float:
        return min(self.default_duration, self.max_duration)
