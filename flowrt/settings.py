"""Settings: parsed once, at the edge, from ``FLOWRT_*`` variables and CLI flags.

No other module reads ``os.environ``. Every timing and limit lives here with its
default; an invalid value raises ``SettingsError`` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .errors import SettingsError

__all__ = ["REDIS_URL_OPTIONS", "SETTINGS", "Settings", "child_environ", "env_given",
           "load_settings", "mask_url"]

# The query options of FLOWRT_REDIS_URL that every Redis connection honours (the hot
# path's Wire as well as redis-py's client, docs/decisions/0006).
REDIS_URL_OPTIONS = frozenset({"db", "ssl_cert_reqs"})


def mask_url(url: str) -> str:
    """``url`` with its password, if any, as ``***``: for anything printed or logged."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass(frozen=True)
class Settings:
    """Every setting flowrt reads. Durations are seconds (floats allowed)."""

    database_url: str = field(default="postgresql://127.0.0.1:5432/flowrt", repr=False)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    redis_prefix: str = "flowrt"
    tenant: str = "default"
    # API
    host: str = "127.0.0.1"
    port: int = 8000
    auth: str = "on"
    auth_cache_ttl: float = 5.0
    rate_limit: float = 1000.0
    rate_burst: int = 2000
    body_limit: int = 1024 * 1024
    header_limit: int = 16 * 1024
    max_json_depth: int = 32
    max_object_keys: int = 1000
    max_string_length: int = 64 * 1024
    # worker
    metrics_port: int = 9100
    concurrency: int = 16
    lock_ttl: float = 30.0
    lock_wait: float = 10.0
    claim_timeout: float = 60.0
    claim_interval: float = 5.0
    max_deliveries: int = 5
    reconciler_period: float = 5.0
    reconciler_grace: float = 10.0
    relay_period: float = 1.0
    relay_grace: float = 2.0
    shutdown_grace: float = 20.0
    retry_attempts: int = 3
    retry_initial_delay: float = 0.2
    retry_max_delay: float = 10.0
    action_timeout: float = 300.0
    # connections
    db_pool_max: int = 10
    db_timeout: float = 5.0
    redis_timeout: float = 5.0
    publish_timeout: float = 0.5
    # process
    gc_threshold: int = 50_000
    # logs
    log_level: str = "info"
    log_format: str = "auto"

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return (f"Settings(database_url={mask_url(self.database_url)!r}, "
                f"redis_url={mask_url(self.redis_url)!r}, {shown})")

    def with_overrides(self, **values: Any) -> Settings:
        """Apply CLI flags (``None`` means not given); values are validated like env."""
        given = {k: v for k, v in values.items() if v is not None}
        return _validated(replace(self, **given))


# name -> (variable, help). The order is the order docs/operations.md lists them.
SETTINGS: dict[str, tuple[str, str]] = {
    "database_url": ("FLOWRT_DATABASE_URL", "PostgreSQL URL (the log, the only source of truth)"),
    "redis_url": ("FLOWRT_REDIS_URL", "Redis URL (stream of wake-up hints, locks)"),
    "redis_prefix": ("FLOWRT_REDIS_PREFIX", "prefix of every Redis key flowrt uses"),
    "tenant": ("FLOWRT_TENANT", "the CLI's tenant (replay, export); the API's when auth is off"),
    "host": ("FLOWRT_HOST", "API listen host"),
    "port": ("FLOWRT_PORT", "API listen port"),
    "auth": ("FLOWRT_AUTH", "on (API keys required) or off (local experiments only)"),
    "auth_cache_ttl": ("FLOWRT_AUTH_CACHE_TTL",
                       "how long the API trusts a checked key (a revocation's delay)"),
    "rate_limit": ("FLOWRT_RATE_LIMIT", "requests per second per tenant (0: no limit)"),
    "rate_burst": ("FLOWRT_RATE_BURST", "requests a tenant may send at once above the rate"),
    "body_limit": ("FLOWRT_BODY_LIMIT", "largest accepted request body in bytes (413 above)"),
    "header_limit": ("FLOWRT_HEADER_LIMIT", "largest accepted request headers in bytes (431)"),
    "max_json_depth": ("FLOWRT_MAX_JSON_DEPTH", "deepest accepted JSON nesting"),
    "max_object_keys": ("FLOWRT_MAX_OBJECT_KEYS", "most keys in one JSON object (422 above)"),
    "max_string_length": ("FLOWRT_MAX_STRING_LENGTH",
                          "longest JSON string, in characters (422 above)"),
    "metrics_port": ("FLOWRT_METRICS_PORT", "worker Prometheus port (0 disables)"),
    "concurrency": ("FLOWRT_CONCURRENCY", "executions a worker processes at once"),
    "lock_ttl": ("FLOWRT_LOCK_TTL", "per-execution lock lifetime; extended while work runs"),
    "lock_wait": ("FLOWRT_LOCK_WAIT", "how long a worker waits for a busy execution lock"),
    "claim_timeout": ("FLOWRT_CLAIM_TIMEOUT", "idle time after which a pending hint is reclaimed"),
    "claim_interval": ("FLOWRT_CLAIM_INTERVAL", "how often a worker looks for hints to reclaim"),
    "max_deliveries": ("FLOWRT_MAX_DELIVERIES", "deliveries before a hint is dead-lettered"),
    "reconciler_period": ("FLOWRT_RECONCILER_PERIOD", "how often lagging executions are re-hinted"),
    "reconciler_grace": ("FLOWRT_RECONCILER_GRACE", "lag tolerated before the reconciler re-hints"),
    "relay_period": ("FLOWRT_RELAY_PERIOD", "how often unpublished events are republished"),
    "relay_grace": ("FLOWRT_RELAY_GRACE", "age before an unpublished event is relayed"),
    "shutdown_grace": ("FLOWRT_SHUTDOWN_GRACE", "bound on finishing in-flight work at SIGTERM"),
    "retry_attempts": ("FLOWRT_RETRY_ATTEMPTS", "default attempts per action"),
    "retry_initial_delay": ("FLOWRT_RETRY_INITIAL_DELAY", "default first retry delay"),
    "retry_max_delay": ("FLOWRT_RETRY_MAX_DELAY", "default largest retry delay"),
    "action_timeout": ("FLOWRT_ACTION_TIMEOUT", "default longest try of an action"),
    "db_pool_max": ("FLOWRT_DB_POOL_MAX", "largest PostgreSQL pool"),
    "db_timeout": ("FLOWRT_DB_TIMEOUT", "PostgreSQL connect and acquire timeout"),
    "redis_timeout": ("FLOWRT_REDIS_TIMEOUT", "Redis socket timeout"),
    "publish_timeout": ("FLOWRT_PUBLISH_TIMEOUT",
                        "API's bound on publishing a hint; past it the relay sends it"),
    "gc_threshold": ("FLOWRT_GC_THRESHOLD",
                     "API and worker: allocations between cycle collections (0: Python's)"),
    "log_level": ("FLOWRT_LOG_LEVEL", "debug, info, warning or error"),
    "log_format": ("FLOWRT_LOG_FORMAT", "auto (JSON unless a TTY), json or console"),
}

_POSITIVE = {"action_timeout", "port", "body_limit", "max_json_depth", "concurrency",
             "auth_cache_ttl", "rate_burst", "header_limit", "max_object_keys",
             "max_string_length",
             "lock_ttl", "lock_wait",
             "claim_timeout", "claim_interval", "max_deliveries", "reconciler_period",
             "relay_period", "shutdown_grace", "retry_attempts", "db_pool_max", "db_timeout",
             "redis_timeout", "publish_timeout"}
_CHOICES = {"auth": ("on", "off"),
            "log_level": ("debug", "info", "warning", "error"),
            "log_format": ("auto", "json", "console")}


def _where(name: str) -> str:
    return SETTINGS[name][0]


def _convert(name: str, raw: str, kind: type) -> Any:
    text = raw.strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        word = "an integer" if kind is int else "a number of seconds"
        raise SettingsError(f"{_where(name)}={raw!r}: expected {word}") from None
    return text


def _validated(s: Settings) -> Settings:
    for f in fields(s):
        value = getattr(s, f.name)
        var = _where(f.name)
        if f.name in _POSITIVE and not value > 0:
            raise SettingsError(f"{var}={value!r}: must be greater than 0")
        if isinstance(value, (int, float)) and value < 0:
            raise SettingsError(f"{var}={value!r}: must not be negative")
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            raise SettingsError(f"{var}={value!r}: expected one of {', '.join(_CHOICES[f.name])}")
    if not s.database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"FLOWRT_DATABASE_URL={mask_url(s.database_url)!r}: expected postgresql://")
    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"FLOWRT_REDIS_URL={mask_url(s.redis_url)!r}: expected redis://")
    unknown = set(parse_qs(urlsplit(s.redis_url).query)) - REDIS_URL_OPTIONS
    if unknown:
        raise SettingsError(f"FLOWRT_REDIS_URL: option(s) {', '.join(sorted(unknown))} not"
                            f" supported (only {', '.join(sorted(REDIS_URL_OPTIONS))})")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", s.redis_prefix):
        raise SettingsError(f"FLOWRT_REDIS_PREFIX={s.redis_prefix!r}: use letters, digits, _.:-")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.tenant):
        raise SettingsError(f"FLOWRT_TENANT={s.tenant!r}: use letters, digits, _.-")
    if s.port > 65535 or s.metrics_port > 65535:
        raise SettingsError("FLOWRT_PORT / FLOWRT_METRICS_PORT: a port is at most 65535")
    if s.claim_timeout <= s.lock_ttl / 3:
        # A worker refreshes the hints it works on every FLOWRT_LOCK_TTL / 3; a shorter
        # claim timeout would let live work be reclaimed (and counted as redelivered).
        raise SettingsError("FLOWRT_CLAIM_TIMEOUT: must exceed FLOWRT_LOCK_TTL / 3")
    if s.retry_initial_delay > s.retry_max_delay:
        raise SettingsError("FLOWRT_RETRY_INITIAL_DELAY: must not exceed FLOWRT_RETRY_MAX_DELAY")
    return s


def env_given(environ: Mapping[str, str], name: str) -> bool:
    """Whether the variable behind setting ``name`` is set to a non-empty value."""
    return bool(environ.get(_where(name), "").strip())


def child_environ(s: Settings, **extra: str) -> dict[str, str]:
    """The environment for a child process that must run with exactly ``s``: this
    process's environment (PATH, HOME, ...) minus its FLOWRT_* variables, plus every
    setting of ``s``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_")}
    env.update({var: str(getattr(s, name)) for name, (var, _help) in SETTINGS.items()})
    env.update(extra)
    return env


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build settings from a mapping of environment variables (pass ``os.environ``)."""
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        var = _where(f.name)
        if var in environ and environ[var].strip() != "":
            values[f.name] = _convert(f.name, environ[var], type(getattr(defaults, f.name)))
    return _validated(replace(defaults, **values))
