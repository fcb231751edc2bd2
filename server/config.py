"""Typed configuration: config.yaml plus environment overrides, validated once by a JSON Schema.

Over 300 lines because the sections, the schema generated from them and the environment
overrides must change together: one file keeps a new setting a one-place change.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from jsonschema import Draft202012Validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.yaml"


class ConfigError(Exception):
    """The configuration is unreadable or invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    # Host names the server answers to (a request naming another is a 400): empty means the
    # loopback names and `host`; ".example.com" also takes its subdomains, "*" any name.
    allowed_hosts: tuple[str, ...] = ()
    # A body or query failing its schema answers with at most this many violations (the rest
    # are neither listed nor looked for; the answer says `"errors_truncated": true`).
    max_violations: int = 50
    # aiohttp's graceful shutdown: in-flight requests get this long to finish.
    shutdown_timeout: float = 20.0
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    # "text" (one readable line per record) or "json" (one JSON object per line, for collectors).
    format: str = "text"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics at /internal/metrics, summed over every process of the system."""

    enabled: bool = True
    # prometheus_client's multiprocess directory: each process writes its figures to files here,
    # and a scrape sums them. `python -m server supervise` (make run) empties it on start.
    dir: str = "var/metrics"
    # A bearer token a scraper may send instead of the internal credentials; empty: none accepted.
    token: str = ""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # postgresql://user@host:5432/name selects PostgreSQL (the password may come from PGPASSWORD
    # or ~/.pgpass instead of the URL); empty: SQLite in the file at `path`.
    url: str = ""
    path: str = "var/app.db"
    # SQLite: how long a write waits for another process's lock. PostgreSQL: how long a
    # statement waits for a free pool connection. Either way, then 503.
    busy_timeout_ms: int = 5000
    # SQLite: one reader per process measured fastest (13k vs 11k req/s on GET /api/v1/foo, one
    # core): each reader is a thread; more of them only contend for the GIL.
    read_connections: int = 1
    # Writes of one process waiting for the write lock; more answer 503 at once (and each waits
    # at most busy_timeout_ms), so a locked database cannot pile up requests without bound.
    max_waiting_writers: int = 256
    # Apply missing migrations on start-up; when false, start-up refuses until `python -m server migrate`.
    auto_migrate: bool = True
    # PostgreSQL: connections per process (web and worker processes each have a pool).
    pool_min_size: int = 1
    pool_max_size: int = 10
    # PostgreSQL: prepared statements kept per connection; 0 behind PgBouncer in transaction mode.
    statement_cache_size: int = 100
    connect_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6399/0"
    # How long a request waits on Redis (cache, enqueue, /readyz) before it gives up on it, so a
    # hung Redis cannot hang a request. Applied per use with asyncio.timeout on the app's client.
    socket_timeout: float = 1.0
    connect_timeout: float = 1.0
    # A password in `url` wins; else `password`; else the contents of `password_file` (read once,
    # at start-up). Under `make run` the supervised Redis requires one: see README "Security".
    password: str = ""
    password_file: str = ""
    # Redis through Sentinel: each sentinel's "host:port" and the master's name. Then `url` only
    # gives the database number (and a password); clients follow the master across failovers.
    sentinels: tuple[str, ...] = ()
    master_name: str = "mymaster"
    sentinel_password: str = ""
    # Whether circus runs redis-server on this host. auto: when circus.role is `all`, no sentinels
    # are set and `url` points at this host (loopback); always; never (Redis runs elsewhere).
    supervise: str = "auto"

    def effective_password(self) -> str:
        """The password clients send: the URL's, else `password` (password_file already read)."""
        return unquote(urlsplit(self.url).password or "") or self.password


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    default_ttl: int = 60
    prefix: str = "cache"
    # How long a miss may hold the per-key lock, and how long others wait for it.
    lock_timeout: float = 5.0
    wait_timeout: float = 2.0
    # After a Redis error, cached routes skip Redis this long (answering BYPASS) before trying again.
    retry_interval: float = 1.0
    # The cache's own Redis (empty: the queue's redis.url). A separate instance may evict entries
    # under maxmemory without ever evicting a queued job (README, "Caching"). With redis.sentinels,
    # `master_name` names the cache's own master instead.
    redis_url: str = ""
    master_name: str = ""
    # `Cache-Control: no-cache` refreshes an entry at most this many times per client per window
    # (seconds); beyond, the request is answered from the cache like any other. 0: never.
    refresh_budget: int = 10
    refresh_window: int = 60


@dataclass(frozen=True, slots=True)
class CatFactsConfig:
    url: str = "https://catfact.ninja/fact"
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class QueueConfig:
    # Run a SAQ worker inside the web process (development / single process).
    embedded_worker: bool = True
    # Highest priority first; `enqueue(..., priority=name)` picks one. The cron jobs run on the last.
    names: tuple[str, ...] = ("high", "default", "low")
    # Jobs one worker runs at a time: the queue named "high" gets more, "low" fewer.
    concurrency: int = 4
    high_concurrency: int = 8
    low_concurrency: int = 2
    # A job running longer is failed; it also bounds how long a dead worker's job waits for the sweep.
    job_timeout: int = 30
    # Attempts in all (1 = no retry); retries wait retry_delay, doubling up to retry_backoff_max (0: fixed).
    job_retries: int = 3
    retry_delay: float = 1.0
    retry_backoff_max: float = 30.0
    shutdown_grace: float = 10.0
    sweep_interval: int = 5
    dequeue_timeout: float = 1.0
    # Entries kept in the failed-jobs list shown at /internal/jobs/failed.
    failed_keep: int = 200
    # When the database statistics job runs (croniter syntax; a 6th field counts seconds).
    stats_cron: str = "* * * * *"


@dataclass(frozen=True, slots=True)
class HoneybadgerConfig:
    api_key: str = ""
    environment: str = "development"
    endpoint: str = "https://api.honeybadger.io"
    params_filters: tuple[str, ...] = (
        "password",
        "password_confirmation",
        "secret",
        "token",
        "authorization",
        "api_key",
        "credit_card",
        "cookie",
    )
    # Send even from development/test environments (the collector decides what to keep).
    force_report_data: bool = False
    timeout: float = 5.0
    max_backlog: int = 100
    # At shutdown, queued notices get this long to be sent; the rest are dropped.
    flush_timeout: float = 3.0


@dataclass(frozen=True, slots=True)
class InternalConfig:
    username: str = "admin"
    password: str = ""
    # Read at start-up when `password` is empty (`make run` generates one under var/).
    password_file: str = ""


@dataclass(frozen=True, slots=True)
class CircusConfig:
    # A unix socket only the service's user can open (its folder is 0700, the socket 0600); a
    # relative path is relative to the config file's folder. tcp:// has no authentication at all.
    endpoint: str = "ipc://var/circus/control.sock"
    timeout: float = 2.0
    # What this host runs: all (everything, one box), web (web processes only), worker (workers only).
    role: str = "all"
    # How long the launcher waits for Redis and the database to answer before it gives up.
    wait_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # True: the API's reads (GET, HEAD) are public and its writes need a token; False: every API
    # route needs one. Routes stamped @requires(scope) always need a token holding that scope.
    public_reads: bool = True
    # How long a process trusts what it read about a token before asking the database again. A
    # revocation reaches every process at once through Redis pub/sub; this bounds how late it can
    # be when that message is lost (Redis down while revoking).
    cache_ttl: float = 30.0
    # Tokens (and unknown token hashes) one process remembers.
    cache_size: int = 10000
    # A token's last_used_at is written at most this often (seconds), off the request path.
    last_used_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    enabled: bool = True
    # Every API route without its own @rate_limit stamp, per client: "<count>/<period>" where the
    # period is s, m, h or d, optionally with a number ("300/5m"); "" for no default limit.
    default: str = "100/s"
    # Requests a client may send at once before the rate applies (the bucket's size).
    default_burst: int = 200
    # Addresses (or networks, "10.0.0.0/8") of reverse proxies whose X-Forwarded-For is believed:
    # a request from one of them is counted against the first address in that header, from the
    # right, that is not itself a trusted proxy. Empty: the peer address is the client.
    trusted_proxies: tuple[str, ...] = ()
    # Every rate-limit key in Redis starts with "<prefix>:".
    prefix: str = "ratelimit"
    # After a Redis error, requests pass unlimited without trying Redis for this long (seconds).
    retry_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class CorsConfig:
    # Origins allowed to call the API from a browser ("https://app.example.com"), or "*" for any.
    # Empty (the default): no CORS headers at all, so browsers keep other sites out.
    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    # Answer headers a page of an allowed origin may read besides the CORS-safelisted ones.
    expose_headers: tuple[str, ...] = (
        "X-Request-ID",
        "Location",
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
    )
    # Let pages send cookies or HTTP credentials along; never together with "*".
    allow_credentials: bool = False
    # Seconds a browser may cache a preflight answer (0: the header is not sent).
    max_age: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    cat_facts: CatFactsConfig = field(default_factory=CatFactsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    honeybadger: HoneybadgerConfig = field(default_factory=HoneybadgerConfig)
    internal: InternalConfig = field(default_factory=InternalConfig)
    circus: CircusConfig = field(default_factory=CircusConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (tuples as lists), the shape `build_config` takes."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


# Environment variables that override config.yaml. Names are part of the contract: add, never rename.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "SERVER_HOST": ("server", "host"),
    "SERVER_PORT": ("server", "port"),
    "SERVER_ALLOWED_HOSTS": ("server", "allowed_hosts"),
    "LOG_LEVEL": ("logging", "level"),
    "LOG_FORMAT": ("logging", "format"),
    "METRICS_ENABLED": ("metrics", "enabled"),
    "METRICS_DIR": ("metrics", "dir"),
    "METRICS_TOKEN": ("metrics", "token"),
    "DATABASE_PATH": ("database", "path"),
    "DATABASE_URL": ("database", "url"),
    "DATABASE_AUTO_MIGRATE": ("database", "auto_migrate"),
    "REDIS_URL": ("redis", "url"),
    "CACHE_REDIS_URL": ("cache", "redis_url"),
    "REDIS_PASSWORD": ("redis", "password"),
    "REDIS_PASSWORD_FILE": ("redis", "password_file"),
    "REDIS_SENTINELS": ("redis", "sentinels"),
    "REDIS_MASTER_NAME": ("redis", "master_name"),
    "REDIS_SENTINEL_PASSWORD": ("redis", "sentinel_password"),
    "REDIS_SUPERVISE": ("redis", "supervise"),
    "CAT_FACTS_URL": ("cat_facts", "url"),
    "QUEUE_EMBEDDED_WORKER": ("queue", "embedded_worker"),
    "HONEYBADGER_API_KEY": ("honeybadger", "api_key"),
    "HONEYBADGER_ENVIRONMENT": ("honeybadger", "environment"),
    "HONEYBADGER_ENDPOINT": ("honeybadger", "endpoint"),
    "HONEYBADGER_FORCE_REPORT_DATA": ("honeybadger", "force_report_data"),
    "INTERNAL_USERNAME": ("internal", "username"),
    "INTERNAL_PASSWORD": ("internal", "password"),
    "INTERNAL_PASSWORD_FILE": ("internal", "password_file"),
    "CIRCUS_ENDPOINT": ("circus", "endpoint"),
    "HOST_ROLE": ("circus", "role"),
    "AUTH_PUBLIC_READS": ("auth", "public_reads"),
    "RATE_LIMIT_ENABLED": ("rate_limit", "enabled"),
    "RATE_LIMIT_DEFAULT": ("rate_limit", "default"),
}

# "<count>/<period>": 20/s, 1000/h, 300/5m (the stamps and rate_limit.default share it).
RATE_PATTERN = r"^$|^[1-9][0-9]{0,8}/([1-9][0-9]{0,5})?[smhd]$"

_SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _json_type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(annotation)
        return {"type": "array", "items": _json_type(item)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_json_type(a) for a in typing.get_args(annotation)]}
    return {
        str: {"type": "string"},
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        type(None): {"type": "null"},
    }[annotation]


def _section_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _json_type(hints[f.name]) for f in dataclasses.fields(cls)},
    }


def _config_schema() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _section_schema(hints[name]) for name in _SECTIONS},
    }
    props = schema["properties"]
    # Constraints beyond the types, where a wrong value would fail later and obscurely.
    props["server"]["properties"]["port"].update(minimum=0, maximum=65535)
    props["server"]["properties"]["host"]["minLength"] = 1
    props["server"]["properties"]["allowed_hosts"]["items"].update(minLength=1, pattern=r"^[^\s/]+$")
    props["server"]["properties"]["max_body_bytes"]["minimum"] = 1
    props["server"]["properties"]["max_violations"].update(minimum=1, maximum=10_000)
    props["server"]["properties"]["shutdown_timeout"]["minimum"] = 0
    props["logging"]["properties"]["level"]["enum"] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    props["logging"]["properties"]["format"]["enum"] = ["text", "json"]
    props["metrics"]["properties"]["dir"]["minLength"] = 1
    props["database"]["properties"]["path"]["minLength"] = 1
    props["database"]["properties"]["read_connections"].update(minimum=1, maximum=32)
    props["database"]["properties"]["busy_timeout_ms"]["minimum"] = 1
    props["database"]["properties"]["url"]["pattern"] = r"^$|^postgres(ql)?://"
    props["database"]["properties"]["pool_min_size"].update(minimum=0, maximum=1000)
    props["database"]["properties"]["pool_max_size"].update(minimum=1, maximum=1000)
    props["database"]["properties"]["statement_cache_size"]["minimum"] = 0
    props["database"]["properties"]["connect_timeout"]["exclusiveMinimum"] = 0
    props["database"]["properties"]["max_waiting_writers"]["minimum"] = 0
    props["redis"]["properties"]["url"]["pattern"] = r"^(redis|rediss|unix)://"
    props["redis"]["properties"]["socket_timeout"]["exclusiveMinimum"] = 0
    props["redis"]["properties"]["connect_timeout"]["exclusiveMinimum"] = 0
    props["redis"]["properties"]["sentinels"]["items"]["pattern"] = r"^[^\s:]+:\d{1,5}$"
    props["redis"]["properties"]["master_name"]["minLength"] = 1
    props["redis"]["properties"]["supervise"]["enum"] = ["auto", "always", "never"]
    props["cache"]["properties"]["default_ttl"]["minimum"] = 1
    props["cache"]["properties"]["lock_timeout"]["exclusiveMinimum"] = 0
    props["cache"]["properties"]["wait_timeout"]["minimum"] = 0
    props["cache"]["properties"]["retry_interval"]["minimum"] = 0
    props["cache"]["properties"]["prefix"]["pattern"] = r"^[A-Za-z0-9_.:-]+$"
    props["cache"]["properties"]["redis_url"]["pattern"] = r"^((redis|rediss|unix)://.*)?$"
    props["cache"]["properties"]["refresh_budget"]["minimum"] = 0
    props["cache"]["properties"]["refresh_window"]["minimum"] = 1
    props["cat_facts"]["properties"]["url"]["pattern"] = r"^https?://"
    props["cat_facts"]["properties"]["timeout"]["exclusiveMinimum"] = 0
    queue = props["queue"]["properties"]
    queue["names"].update(minItems=1, uniqueItems=True)
    queue["names"]["items"]["pattern"] = r"^[a-z][a-z0-9_-]*$"
    queue["concurrency"]["minimum"] = 1
    queue["job_timeout"]["minimum"] = 1
    queue["job_retries"]["minimum"] = 1
    queue["shutdown_grace"]["minimum"] = 0
    queue["sweep_interval"]["minimum"] = 1
    queue["dequeue_timeout"]["exclusiveMinimum"] = 0
    queue["high_concurrency"]["minimum"] = 1
    queue["low_concurrency"]["minimum"] = 1
    queue["retry_delay"]["minimum"] = 0
    queue["retry_backoff_max"]["minimum"] = 0
    queue["failed_keep"]["minimum"] = 1
    queue["stats_cron"]["minLength"] = 1
    hb = props["honeybadger"]["properties"]
    hb["endpoint"]["pattern"] = r"^https?://"
    hb["timeout"]["exclusiveMinimum"] = 0
    hb["max_backlog"]["minimum"] = 1
    hb["flush_timeout"]["minimum"] = 0
    props["internal"]["properties"]["username"]["minLength"] = 1
    props["circus"]["properties"]["endpoint"]["pattern"] = r"^(tcp|ipc)://"
    props["circus"]["properties"]["role"]["enum"] = ["all", "web", "worker"]
    props["circus"]["properties"]["wait_timeout"]["exclusiveMinimum"] = 0
    auth = props["auth"]["properties"]
    auth["cache_ttl"]["minimum"] = 0
    auth["cache_size"]["minimum"] = 1
    auth["last_used_interval"]["minimum"] = 0
    limits = props["rate_limit"]["properties"]
    limits["default"]["pattern"] = RATE_PATTERN
    limits["default_burst"].update(minimum=1, maximum=1_000_000_000)
    limits["trusted_proxies"]["items"]["minLength"] = 1
    limits["prefix"]["pattern"] = r"^[A-Za-z0-9_.:-]+$"
    limits["retry_interval"]["minimum"] = 0
    cors = props["cors"]["properties"]
    cors["allow_origins"]["items"]["pattern"] = r"^(\*|https?://[^/\s]+)$"
    cors["allow_methods"]["items"]["pattern"] = r"^[A-Z]+$"
    for name in ("allow_headers", "expose_headers"):
        cors[name]["items"]["pattern"] = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
    cors["max_age"]["minimum"] = 0
    return schema


def _semantic_error(raw: Mapping[str, Any]) -> str | None:
    """What the schema cannot say: settings that only fail together, or values it cannot parse."""
    cors = raw.get("cors") or {}
    if cors.get("allow_credentials") and "*" in (cors.get("allow_origins") or ()):
        return "cors.allow_credentials: cannot be true while cors.allow_origins has '*' (name the origins)"
    for index, proxy in enumerate((raw.get("rate_limit") or {}).get("trusted_proxies") or ()):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            return f"rate_limit.trusted_proxies.{index}: {proxy!r} is not an IP address or network"
    return None


CONFIG_SCHEMA: dict[str, Any] = _config_schema()
CONFIG_VALIDATOR = Draft202012Validator(CONFIG_SCHEMA)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    """Turn an environment string into the schema's type; leave it alone when it does not parse."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        return raw
    if kind == "array":  # a comma-separated list
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    return raw


def apply_env_overrides(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of `raw` with the documented environment variables applied."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for env_name, (section, key) in ENV_OVERRIDES.items():
        if env_name not in environ:
            continue
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # reported by validation as a wrong type for the section
        key_schema = CONFIG_SCHEMA["properties"][section]["properties"][key]
        target[key] = _coerce(environ[env_name], key_schema)
    return merged


def _error_line(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        return f"{path + ': ' if path else ''}{error.message}"
    return f"{path or '<root>'}: {error.message}"


def build_config(raw: Mapping[str, Any] | None, *, base_dir: Path | None = None) -> Config:
    """Validate plain data and turn it into a `Config`; raises ConfigError naming the bad key."""
    raw = dict(raw or {})
    errors = sorted(CONFIG_VALIDATOR.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(_error_line(errors[0]))
    problem = _semantic_error(raw)
    if problem is not None:
        raise ConfigError(problem)
    hints = typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    for name, cls in hints.items():
        values = dict(raw.get(name) or {})
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(value)
        sections[name] = cls(**values)
    config = Config(**sections)
    if config.database.pool_min_size > config.database.pool_max_size:
        raise ConfigError("database.pool_min_size: must not be larger than database.pool_max_size")
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return _read_password_files(config)


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    """Relative paths in the config are relative to the config file's folder."""

    def resolved(value: str) -> str:
        return value if not value or Path(value).is_absolute() else str(base_dir / value)

    db = config.database
    if db.path != ":memory:":
        db = dataclasses.replace(db, path=resolved(db.path))
    circus = config.circus
    if circus.endpoint.startswith("ipc://"):
        circus = dataclasses.replace(circus, endpoint="ipc://" + resolved(circus.endpoint[len("ipc://") :]))
    return dataclasses.replace(
        config,
        database=db,
        circus=circus,
        metrics=dataclasses.replace(config.metrics, dir=resolved(config.metrics.dir)),
        redis=dataclasses.replace(config.redis, password_file=resolved(config.redis.password_file)),
        internal=dataclasses.replace(config.internal, password_file=resolved(config.internal.password_file)),
    )


def _read_secret(path: str, key: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _read_password_files(config: Config) -> Config:
    """Fill an empty password from its file, so no secret has to sit in the environment."""
    if not config.redis.password and config.redis.password_file:
        value = _read_secret(config.redis.password_file, "redis.password_file")
        config = dataclasses.replace(config, redis=dataclasses.replace(config.redis, password=value))
    if not config.internal.password and config.internal.password_file:
        value = _read_secret(config.internal.password_file, "internal.password_file")
        config = dataclasses.replace(config, internal=dataclasses.replace(config.internal, password=value))
    return config


def load_config(path: Path | str = DEFAULT_CONFIG_PATH, environ: Mapping[str, str] | None = None) -> Config:
    """Read config.yaml, apply the environment, validate; raises ConfigError with one clear line."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: <root>: must be a mapping of sections")
    raw = apply_env_overrides(raw, environ)
    try:
        return build_config(raw, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
