"""Security events: a refused caller or file, as one JSON log line on the `security` logger and one
count in `pdfsmaller_gateway_security_events_total{event, reason}`.

Every line carries `event`, `reason`, `tenant` (null before authentication; never the API key, nor
any digest of it), `client_address` (services.gateway.client_address), Envoy's `request_id` when
there is one (the access log's field of the same name), and the trace id the JSON formatter adds.
The metric's labels take only the values listed in REASONS, so its series are few and known.
"""

from __future__ import annotations

import enum
import itertools
import logging
import re
from collections.abc import Collection, Mapping

import grpc
from prometheus_client import CollectorRegistry, Counter

from services.gateway.client_address import client_address
from services.gateway.ratelimit import Budget
from services.gateway.settings import ACTIVE_CONTENT_KINDS

SECURITY_LOGGER = "security"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
# A malware signature name is the scanner's (clamd's database), but a log line stays short anyway.
MAX_SIGNATURE_CHARS = 200
MAX_NUMBER_DIGITS = 18


class SecurityEvent(enum.Enum):
    AUTHENTICATION_FAILED = "authentication_failed"
    # A valid key without the scope the call needs (reason: that scope).
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"
    MALWARE_DETECTED = "malware_detected"
    ACTIVE_CONTENT_REFUSED = "active_content_refused"


def _kind_sets() -> tuple[str, ...]:
    """Every non-empty set of active-content kinds, as its sorted names joined by commas."""
    kinds = sorted(ACTIVE_CONTENT_KINDS)
    sets = itertools.chain.from_iterable(itertools.combinations(kinds, n) for n in range(1, len(kinds) + 1))
    return tuple(",".join(names) for names in sets)


# The only `reason` values each event has (the metric's series, all present from the start at 0).
REASONS: Mapping[SecurityEvent, tuple[str, ...]] = {
    SecurityEvent.AUTHENTICATION_FAILED: ("missing_key", "invalid_key"),
    SecurityEvent.PERMISSION_DENIED: ("upload", "read", "delete"),
    SecurityEvent.RATE_LIMIT_EXCEEDED: tuple(budget.value for budget in Budget),
    SecurityEvent.QUOTA_EXCEEDED: ("files", "bytes"),
    SecurityEvent.MALWARE_DETECTED: ("infected",),
    SecurityEvent.ACTIVE_CONTENT_REFUSED: _kind_sets(),
}
# The Unauthenticated reasons of services.gateway.auth, as this event's reasons.
AUTHENTICATION_REASONS = {"API_KEY_MISSING": "missing_key", "API_KEY_INVALID": "invalid_key"}
OTHER_REASON = "other"


class SecurityEvents:
    """Logs and counts security events; the servicer calls one method per event."""

    def __init__(self, registry: CollectorRegistry, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(SECURITY_LOGGER)
        self._events = Counter(
            "pdfsmaller_gateway_security_events_total",
            "Security events: refused callers and files, by event and reason.",
            ["event", "reason"],
            registry=registry,
        )
        for event, reasons in REASONS.items():
            for reason in reasons:
                self._events.labels(event.value, reason)

    def authentication_failed(self, context: grpc.ServicerContext, error_reason: str) -> None:
        """A missing or unknown API key (`error_reason`: the Unauthenticated reason)."""
        reason = AUTHENTICATION_REASONS.get(error_reason, OTHER_REASON)
        self._record(SecurityEvent.AUTHENTICATION_FAILED, reason, context, None, {})

    def permission_denied(self, context: grpc.ServicerContext, tenant: str, scope: str) -> None:
        """A known key used for a call outside its scopes (`scope`: the one missing)."""
        self._record(SecurityEvent.PERMISSION_DENIED, scope, context, tenant, {"scope": scope})

    def rate_limit_exceeded(
        self, context: grpc.ServicerContext, tenant: str, budget: Budget, details: Mapping[str, str]
    ) -> None:
        """A refusal by the per-key rate limit; `details` is its ErrorInfo metadata (policy, retry after)."""
        fields = {"budget": budget.value, **_picked(details, "policy", "retry_after_seconds")}
        self._record(SecurityEvent.RATE_LIMIT_EXCEEDED, budget.value, context, tenant, fields)

    def quota_exceeded(self, context: grpc.ServicerContext, tenant: str, details: Mapping[str, str]) -> None:
        """A refusal by the daily quota; `details` is its ErrorInfo metadata (quota, limit, used)."""
        fields = _picked(details, "quota", "limit", "used", "reset_time")
        self._record(SecurityEvent.QUOTA_EXCEEDED, details.get("quota", ""), context, tenant, fields)

    def malware_detected(self, context: grpc.ServicerContext, tenant: str, signature: str, sha256: str) -> None:
        fields = {"signature": signature[:MAX_SIGNATURE_CHARS], "input_sha256": sha256}
        self._record(SecurityEvent.MALWARE_DETECTED, "infected", context, tenant, fields)

    def active_content_refused(
        self, context: grpc.ServicerContext, tenant: str, kinds: Collection[str], sha256: str
    ) -> None:
        content = sorted(kinds)
        fields = {"content": content, "input_sha256": sha256}
        self._record(SecurityEvent.ACTIVE_CONTENT_REFUSED, ",".join(content), context, tenant, fields)

    def _record(
        self,
        event: SecurityEvent,
        reason: str,
        context: grpc.ServicerContext,
        tenant: str | None,
        details: Mapping[str, object],
    ) -> None:
        reason = reason if reason in REASONS[event] else OTHER_REASON
        self._events.labels(event.value, reason).inc()
        fields: dict[str, object] = {
            "event": event.value,
            "reason": reason,
            "tenant": tenant,
            "client_address": client_address(context),
        }
        request_id = _request_id(context)
        if request_id:
            fields["request_id"] = request_id
        fields.update(details)
        message = event.value.replace("_", " ")
        self._log.warning("%s (%s) from %s", message, reason, fields["client_address"], extra={"fields": fields})


def _picked(details: Mapping[str, str], *names: str) -> dict[str, str | int]:
    """The named ErrorInfo entries; counts as numbers, so jq can compare them."""
    return {name: _number_or_text(details[name]) for name in names if name in details}


def _number_or_text(value: str) -> str | int:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= MAX_NUMBER_DIGITS else value


def _request_id(context: grpc.ServicerContext) -> str | None:
    """Envoy's x-request-id, when it came once and looks like one."""
    values = [value for key, value in context.invocation_metadata() or () if key == REQUEST_ID_HEADER]
    if len(values) != 1 or not isinstance(values[0], str) or not _REQUEST_ID.fullmatch(values[0]):
        return None
    return values[0]
