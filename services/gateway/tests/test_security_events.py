"""Security events without servers: each refusal is one JSON line on the `security` logger with the
right fields (never the API key), one count in its metric, and the client address is the one Envoy
vouches for."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import MISSING, fields
from unittest import mock

import pytest
from opentelemetry import trace
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner_pb
from prometheus_client import CollectorRegistry

from libs.errors import ServiceError
from services.gateway.auth import Authenticator
from services.gateway.client_address import client_address
from services.gateway.quotas import QuotaLimits, QuotaUsage, quota_exceeded
from services.gateway.ratelimit import Budget, Decision, LimitExceeded
from services.gateway.security_events import REASONS, SecurityEvents
from services.gateway.servicer import Dependencies, GatewayServicer
from services.gateway.tests.upload_fakes import CleanScanner, FakeJobs, FakeStorage, upload_messages

API_KEY = "acme-secret-key-0123456789"
WRONG_KEY = "guessed-secret-key-9876543210"
PDF = [b"%PDF-1.7\n" + b"a" * 3000, b"%%EOF\n"]
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
ENVOY_METADATA = (
    ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),  # the client's own claim, then what Envoy saw
    ("x-request-id", "0b7c3c1e-5d2a-4a8e-9f41-2f6c1c1d2e3f"),
)


def _lines(output: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def _context(metadata: tuple[tuple[str, str], ...] = (), peer: str = "ipv4:10.1.2.3:41000") -> mock.Mock:
    context = mock.Mock()
    context.invocation_metadata.return_value = metadata
    context.peer.return_value = peer
    context.is_active.return_value = True
    return context


def _count(registry: CollectorRegistry, event: str, reason: str) -> float | None:
    labels = {"event": event, "reason": reason}
    return registry.get_sample_value("pdfsmaller_gateway_security_events_total", labels)


class RefusingLimiter:
    """The rate limiter's refusal as RateLimiter.check raises it, for every call."""

    def check(self, caller: str, budget: Budget) -> Decision:
        raise LimitExceeded(
            "RATE_LIMITED",
            "rate limit 'read' exceeded",
            headers=(("retry-after", "7"),),
            metadata={"retry_after_seconds": "7", "policy": "read"},
        )


class AllowingLimiter:
    def check(self, caller: str, budget: Budget) -> Decision:
        return Decision(True, ())


class FullQuotas:
    """Quotas with today's one file used: the refusal Quotas.ensure_room raises."""

    def ensure_room(self, tenant: str) -> None:
        now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
        usage = QuotaUsage(QuotaLimits(files_per_day=1), 1, 10, dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
        raise quota_exceeded(usage, "files", now)


class InfectedScanner:
    def ScanObject(self, request: object, timeout: float) -> scanner_pb.ScanObjectResponse:
        return scanner_pb.ScanObjectResponse(verdict=scanner_pb.VERDICT_INFECTED, signature="Eicar-Signature")


def _servicer(registry: CollectorRegistry, **overrides: object) -> GatewayServicer:
    # Parts a test does not look at are mocks; the authenticator and the events are real.
    required = {f.name: mock.Mock() for f in fields(Dependencies) if f.default is MISSING}
    deps = {
        **required,
        "jobs": FakeJobs(),
        "storage": FakeStorage(),
        "scanner": CleanScanner(),
        "authenticator": Authenticator({"acme": API_KEY}),
        "rate_limiter": AllowingLimiter(),
        "security_events": SecurityEvents(registry),
        "max_upload_bytes": 10**6,
        "call_timeout_seconds": 5.0,
        **overrides,
    }
    return GatewayServicer(Dependencies(**deps), registry)


def _upload_refused(servicer: GatewayServicer, metadata: tuple[tuple[str, str], ...]) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        servicer.CreateJob(iter(upload_messages(PDF, filename="a.pdf")), _context(metadata))
    return caught.value


@pytest.mark.parametrize(
    ("presented", "reason"),
    [((("x-api-key", WRONG_KEY),), "invalid_key"), ((), "missing_key")],
)
def test_a_refused_api_key_is_one_event_without_the_key(
    security_log: io.StringIO, presented: tuple[tuple[str, str], ...], reason: str
) -> None:
    registry = CollectorRegistry()
    servicer = _servicer(registry)
    parent = trace.NonRecordingSpan(trace.SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=True))
    with trace.use_span(parent), pytest.raises(ServiceError):
        servicer.GetJob(public.GetJobRequest(id="x"), _context((*presented, *ENVOY_METADATA)))
    (line,) = _lines(security_log)
    assert line["logger"] == "security"
    assert line["level"] == "warning"
    assert line["event"] == "authentication_failed"
    assert line["reason"] == reason
    assert line["tenant"] is None
    assert line["client_address"] == "198.51.100.7"
    assert line["request_id"] == "0b7c3c1e-5d2a-4a8e-9f41-2f6c1c1d2e3f"
    assert line["trace_id"] == f"{TRACE_ID:032x}"
    assert "authentication failed" in str(line["message"])  # the guide's plain-text grep still finds it
    assert _count(registry, "authentication_failed", reason) == 1
    output = security_log.getvalue()
    for secret in (API_KEY, WRONG_KEY):
        assert secret not in output
        assert secret[:8] not in output


def test_a_rate_limit_hit_names_its_budget(security_log: io.StringIO) -> None:
    registry = CollectorRegistry()
    servicer = _servicer(registry, rate_limiter=RefusingLimiter())
    with pytest.raises(LimitExceeded):
        servicer.GetJob(public.GetJobRequest(id="x"), _context((("x-api-key", API_KEY),)))
    (line,) = _lines(security_log)
    assert {k: line[k] for k in ("event", "reason", "tenant", "budget", "policy", "retry_after_seconds")} == {
        "event": "rate_limit_exceeded",
        "reason": "reads",
        "tenant": "acme",
        "budget": "reads",
        "policy": "read",
        "retry_after_seconds": 7,
    }
    assert line["client_address"] == "10.1.2.3"  # no Envoy headers: the gRPC peer
    assert _count(registry, "rate_limit_exceeded", "reads") == 1
    assert API_KEY not in security_log.getvalue()


def test_a_used_up_quota_names_which(security_log: io.StringIO) -> None:
    registry = CollectorRegistry()
    servicer = _servicer(registry, quotas=FullQuotas())
    refused = _upload_refused(servicer, (("x-api-key", API_KEY), *ENVOY_METADATA))
    assert refused.reason == "QUOTA_EXCEEDED"
    (line,) = _lines(security_log)
    assert (line["event"], line["reason"], line["tenant"]) == ("quota_exceeded", "files", "acme")
    assert (line["quota"], line["limit"], line["used"]) == ("files", 1, 1)
    assert _count(registry, "quota_exceeded", "files") == 1
    assert API_KEY not in security_log.getvalue()


def test_malware_names_its_signature(security_log: io.StringIO) -> None:
    registry = CollectorRegistry()
    servicer = _servicer(registry, scanner=InfectedScanner())
    refused = _upload_refused(servicer, (("x-api-key", API_KEY), *ENVOY_METADATA))
    assert refused.reason == "MALWARE_DETECTED"
    (line,) = _lines(security_log)
    assert (line["event"], line["reason"], line["tenant"]) == ("malware_detected", "infected", "acme")
    assert line["signature"] == "Eicar-Signature"
    assert line["input_sha256"] == hashlib.sha256(b"".join(PDF)).hexdigest()  # the file, to find its other uploads
    assert line["client_address"] == "198.51.100.7"
    assert _count(registry, "malware_detected", "infected") == 1
    assert API_KEY not in security_log.getvalue()


def test_refused_active_content_names_the_content(security_log: io.StringIO) -> None:
    registry = CollectorRegistry()
    report = scanner_pb.PdfReport(is_pdf=True, page_count=1, has_launch_action=True, has_javascript=True)
    servicer = _servicer(
        registry, scanner=CleanScanner(pdf=report), refuse_active_content=frozenset({"launch", "javascript"})
    )
    refused = _upload_refused(servicer, (("x-api-key", API_KEY),))
    assert refused.reason == "ACTIVE_CONTENT_REFUSED"
    (line,) = _lines(security_log)
    assert (line["event"], line["reason"], line["tenant"]) == ("active_content_refused", "javascript,launch", "acme")
    assert line["content"] == ["javascript", "launch"]
    assert _count(registry, "active_content_refused", "javascript,launch") == 1


def test_an_accepted_upload_is_no_security_event(security_log: io.StringIO) -> None:
    registry = CollectorRegistry()
    servicer = _servicer(registry)
    job = servicer.CreateJob(iter(upload_messages(PDF, filename="a.pdf")), _context((("x-api-key", API_KEY),)))
    assert job.state == public.JOB_STATE_QUEUED
    assert security_log.getvalue() == ""


def test_every_known_series_starts_at_zero_and_nothing_else_is_a_label() -> None:
    registry = CollectorRegistry()
    events = SecurityEvents(registry)
    for event, reasons in REASONS.items():
        for reason in reasons:
            assert _count(registry, event.value, reason) == 0
    # A reason outside the known ones (a new error reason, odd metadata) is counted as "other", not as itself.
    events.authentication_failed(_context(), "SOMETHING_NEW")
    events.quota_exceeded(_context(), "acme", {"quota": "x" * 1000})
    assert _count(registry, "authentication_failed", "other") == 1
    assert _count(registry, "authentication_failed", "SOMETHING_NEW") is None
    assert _count(registry, "quota_exceeded", "other") == 1


@pytest.mark.parametrize(
    ("metadata", "peer", "expected"),
    [
        # Envoy's x-envoy-external-address (an external client) wins over everything.
        ((("x-envoy-external-address", "192.0.2.1"), ("x-forwarded-for", "10.0.0.1")), "ipv4:10.9.9.9:1", "192.0.2.1"),
        # Otherwise the last x-forwarded-for entry, the one Envoy appended; the client's own entries are ignored.
        ((("x-forwarded-for", "1.1.1.1,  2001:db8::1"),), "ipv4:10.9.9.9:1", "2001:db8::1"),
        # A forged or broken header falls back to the gRPC peer.
        ((("x-forwarded-for", "1.1.1.1, evil\n{json}"),), "ipv4:10.9.9.9:1", "10.9.9.9"),
        ((("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")), "ipv4:10.9.9.9:1", "10.9.9.9"),
        ((("x-envoy-external-address", "not-an-ip"),), "ipv6:%5B::1%5D:5000", "::1"),
        # A huge header costs only its tail.
        ((("x-forwarded-for", "9.9.9.9," * 8000 + "192.0.2.44"),), "ipv4:10.9.9.9:1", "192.0.2.44"),
        ((), "ipv6:[2001:db8::2]:5000", "2001:db8::2"),
        ((), "unix:/run/gateway.sock", "unix"),
        ((), "somewhere", "unknown"),
    ],
)
def test_client_address_is_the_one_envoy_vouches_for(
    metadata: tuple[tuple[str, str], ...], peer: str, expected: str
) -> None:
    assert client_address(_context(metadata, peer)) == expected
