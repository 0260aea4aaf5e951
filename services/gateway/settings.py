"""Gateway settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import limits

from libs.settings import EnvReader, common_ports, local_address
from services.gateway.health import DEFAULT_CACHE_SECONDS as DEFAULT_HEALTH_CACHE_SECONDS
from services.gateway.quotas import QuotaLimits
from services.gateway.ratelimit import Budget, Policy

# Longer would hide an outage from load balancers (which probe every few seconds) for too long.
MAX_HEALTH_CACHE_SECONDS = 30.0
# What the scanner's PDF report can find, by the names REFUSE_ACTIVE_CONTENT uses.
ACTIVE_CONTENT_KINDS = frozenset({"javascript", "launch", "embedded_files"})


@dataclass(frozen=True)
class GatewaySettings:
    listen: str
    metrics_port: int
    jobs_addr: str
    storage_addr: str
    scanner_addr: str
    redis_url: str
    # tenant -> API key (a development bootstrap; every scope). Keys operators create through ApiKeyService
    # live in the jobs database and are checked there.
    api_keys: Mapping[str, str]
    # Per API key: uploads and job changes spend `default`, polls and downloads `read` (RATE_LIMIT*).
    rate_limits: Mapping[Budget, Policy]
    # Per tenant and UTC day (QUOTA_FILES_PER_DAY, QUOTA_BYTES_PER_DAY; 0 = unlimited).
    quotas: QuotaLimits
    max_upload_bytes: int
    call_timeout_seconds: float
    # Kinds of active content that get an upload refused (ACTIVE_CONTENT_REFUSED).
    refuse_active_content: frozenset[str]
    # Calls served at once: every upload, download and watch holds a thread while it lasts.
    max_workers: int
    upload_timeout_seconds: float
    # How long one health check's report is reused (HEALTH_CACHE_SECONDS; 0 = only concurrent calls share one).
    health_cache_seconds: float = DEFAULT_HEALTH_CACHE_SECONDS
    # Written with the bound ports once serving (GATEWAY_ADDRESS_FILE), for launchers using port 0.
    address_file: Path | None = None
    log_level: str = "INFO"
    # A call without an API key is the anonymous tenant "public": development mode with API_KEYS empty only.
    # Otherwise (production always, even with API_KEYS empty) every call needs a key.
    anonymous_access: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = EnvReader(environ)
        listen, metrics_port, address_file = common_ports(env, "gateway")
        api_keys = env.named_secrets("API_KEYS")
        settings = cls(
            listen=listen,
            metrics_port=metrics_port,
            address_file=address_file,
            jobs_addr=env.address("JOBS_ADDR", local_address("jobs")),
            storage_addr=env.address("STORAGE_ADDR", local_address("storage")),
            scanner_addr=env.address("SCANNER_ADDR", local_address("scanner")),
            redis_url=env.str("REDIS_URL"),
            api_keys=api_keys,
            rate_limits=_rate_limits(env),
            quotas=QuotaLimits(
                files_per_day=env.int("QUOTA_FILES_PER_DAY", 0, minimum=0),
                bytes_per_day=env.int("QUOTA_BYTES_PER_DAY", 0, minimum=0),
            ),
            max_upload_bytes=env.int("MAX_UPLOAD_BYTES", 100 * 1024 * 1024, minimum=1),
            call_timeout_seconds=env.float("CALL_TIMEOUT_SECONDS", 30.0),
            refuse_active_content=_parse_kinds(env, env.str("REFUSE_ACTIVE_CONTENT", "launch")),
            max_workers=env.int("GATEWAY_MAX_WORKERS", 256, minimum=4),
            upload_timeout_seconds=env.float("UPLOAD_TIMEOUT_SECONDS", 3600.0),
            health_cache_seconds=_health_cache_seconds(env),
            log_level=env.log_level(),
            anonymous_access=not api_keys and not env.production,
        )
        env.done()
        return settings


def _rate_limits(env: EnvReader) -> dict[Budget, Policy]:
    """RATE_LIMIT / RATE_LIMIT_BURST for uploads and changes, RATE_LIMIT_READ(_BURST) for reads.

    The old RATE_LIMIT_PER_MINUTE=N still works as before: one budget of N a minute for every call,
    no burst shaping (now a moving window). Set together with the new names it is a problem.
    """
    legacy = env.int("RATE_LIMIT_PER_MINUTE", 0, minimum=1)
    new_names = ("RATE_LIMIT", "RATE_LIMIT_BURST", "RATE_LIMIT_READ", "RATE_LIMIT_READ_BURST")
    if legacy:
        if any(env.optional(name) for name in new_names):
            env.problem(
                "RATE_LIMIT_PER_MINUTE is the old setting: set RATE_LIMIT (and RATE_LIMIT_READ) instead, not both"
            )
        shared = Policy("default", limits.RateLimitItemPerMinute(legacy))
        return {Budget.UPLOADS: shared, Budget.READS: shared}
    return {
        Budget.UPLOADS: Policy(
            "default", _limit(env, "RATE_LIMIT", "100/hour"), env.int("RATE_LIMIT_BURST", 20, minimum=0)
        ),
        Budget.READS: Policy(
            "read", _limit(env, "RATE_LIMIT_READ", "7200/hour"), env.int("RATE_LIMIT_READ_BURST", 120, minimum=0)
        ),
    }


def _health_cache_seconds(env: EnvReader) -> float:
    seconds = env.float("HEALTH_CACHE_SECONDS", DEFAULT_HEALTH_CACHE_SECONDS)
    if not 0 <= seconds <= MAX_HEALTH_CACHE_SECONDS:
        env.problem(f"HEALTH_CACHE_SECONDS={seconds} must be between 0 and {MAX_HEALTH_CACHE_SECONDS:.0f}")
        return DEFAULT_HEALTH_CACHE_SECONDS
    return seconds


def _limit(env: EnvReader, name: str, default: str) -> limits.RateLimitItem:
    """`100/hour`, `10/minute`, `1000 per day`: one limit in the `limits` library's notation."""
    raw = env.str(name, default)
    try:
        items = limits.parse_many(raw)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        env.problem(f"{name}={raw!r} is not one rate limit like 100/hour")
        return limits.parse(default)
    return items[0]


def _parse_kinds(env: EnvReader, raw: str) -> frozenset[str]:
    """`launch,javascript` -> the kinds; `none` refuses nothing."""
    kinds = frozenset(part.strip().lower() for part in raw.split(",") if part.strip()) - {"none"}
    unknown = kinds - ACTIVE_CONTENT_KINDS
    if unknown:
        env.problem(f"REFUSE_ACTIVE_CONTENT has unknown kinds {sorted(unknown)}; use {sorted(ACTIVE_CONTENT_KINDS)}")
    return kinds & ACTIVE_CONTENT_KINDS
