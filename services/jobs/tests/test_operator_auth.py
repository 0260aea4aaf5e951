"""The operator APIs' gate (services.jobs.operator_auth): its parts, then on a real jobs server.

On the server every method of OperatorService and ApiKeyService is called without a token, with a
wrong one and with malformed headers: each is refused UNAUTHENTICATED with its reason, is one audit
line and one count, and the audit line never holds what was presented. JobsService needs no token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from pdfsmaller.jobs.v1 import (
    api_key_service_pb2,
    api_keys_pb2,
    jobs_service_pb2,
    jobs_service_pb2_grpc,
    operator_service_pb2,
)
from prometheus_client import CollectorRegistry

from libs.errors import ServiceError, Unauthenticated, reason_of
from libs.logs import JsonFormatter
from libs.service import RunningService
from services.jobs.app import OPERATOR_APIS, build
from services.jobs.operator_auth import (
    AUDIT_LOGGER,
    MAX_REQUEST_CHARS,
    REDACTED,
    OperatorGate,
    OperatorTokens,
    current_operator,
    request_summary,
)
from services.jobs.tests.conftest import service_settings
from tests.plugins.services import in_process

TOKEN = "oncall-token-0123456789abcdefghij"
OTHER_TOKEN = "backup-token-0123456789abcdefghij"
WRONG_TOKEN = "wrong-token-0123456789abcdefghijkl"
COUNTER = "pdfsmaller_operator_calls_total"
OPERATOR_METHODS = [
    method
    for module, service in ((operator_service_pb2, "OperatorService"), (api_key_service_pb2, "ApiKeyService"))
    for method in module.DESCRIPTOR.services_by_name[service].methods
]
# (metadata, reason): every way to come without a valid token.
REFUSALS = [
    ((), "OPERATOR_TOKEN_MISSING"),
    ((("authorization", f"Bearer {WRONG_TOKEN}"),), "OPERATOR_TOKEN_INVALID"),
    ((("authorization", TOKEN),), "OPERATOR_TOKEN_MALFORMED"),
    ((("authorization", f"Basic {TOKEN}"),), "OPERATOR_TOKEN_MALFORMED"),
    ((("authorization", "Bearer "),), "OPERATOR_TOKEN_MALFORMED"),
    ((("authorization", f"Bearer {TOKEN} extra"),), "OPERATOR_TOKEN_MALFORMED"),
    ((("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")), "OPERATOR_TOKEN_MALFORMED"),
]


def reason(call: Any) -> str:
    with pytest.raises(ServiceError) as refused:
        call()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    return refused.value.reason


# --- OperatorTokens ----------------------------------------------------------------------


def test_a_token_names_its_operator() -> None:
    tokens = OperatorTokens({"oncall": TOKEN, "backup": OTHER_TOKEN})
    assert tokens.operator_of([("authorization", f"Bearer {TOKEN}")]) == "oncall"
    assert tokens.operator_of([("user-agent", "grpcurl"), ("authorization", f"Bearer {OTHER_TOKEN}")]) == "backup"


def test_scheme_case_and_surrounding_whitespace_do_not_matter() -> None:
    # A configured token read from a Secret file often ends with a newline.
    tokens = OperatorTokens({"oncall": f"{TOKEN}\n"})
    for header in (f"bearer {TOKEN}", f"BEARER   {TOKEN}  ", f" Bearer {TOKEN}"):
        assert tokens.operator_of([("authorization", header)]) == "oncall", header
    assert tokens.operator_of([("authorization", f"Bearer {TOKEN}".encode())]) == "oncall"


@pytest.mark.parametrize(("metadata", "expected"), REFUSALS)
def test_refusals_say_why(metadata: tuple[tuple[str, str], ...], expected: str) -> None:
    assert reason(lambda: OperatorTokens({"oncall": TOKEN}).operator_of(metadata)) == expected


def test_a_prefix_or_an_extension_of_a_token_is_invalid() -> None:
    tokens = OperatorTokens({"oncall": TOKEN})
    for presented in (TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert reason(lambda p=presented: tokens.operator_of([("authorization", f"Bearer {p}")])) == (
            "OPERATOR_TOKEN_INVALID"
        )


def test_without_tokens_nothing_is_accepted() -> None:
    tokens = OperatorTokens({})
    assert reason(lambda: tokens.operator_of([("authorization", f"Bearer {TOKEN}")])) == "OPERATOR_TOKENS_UNSET"
    assert reason(lambda: tokens.operator_of(None)) == "OPERATOR_TOKENS_UNSET"


def test_refusal_messages_never_quote_the_presented_value() -> None:
    tokens = OperatorTokens({"oncall": TOKEN})
    for metadata, _ in REFUSALS:
        with pytest.raises(Unauthenticated) as refused:
            tokens.operator_of(metadata)
        assert TOKEN not in refused.value.message
        assert WRONG_TOKEN not in refused.value.message


# --- request_summary ---------------------------------------------------------------------


def _nested_message_type() -> type[Message]:
    """A message type made for this test: secrets at every depth, in every field shape."""
    file = descriptor_pb2.FileDescriptorProto(name="redaction_test.proto", package="redaction.test", syntax="proto3")
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="api_key", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    inner.field.add(name="password", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES, label=1)
    inner.field.add(name="name", number=3, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    outer = file.message_type.add(name="Outer")
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    outer.field.add(name="inner", number=1, type=message, type_name=".redaction.test.Inner", label=1)
    outer.field.add(name="items", number=2, type=message, type_name=".redaction.test.Inner", label=3)
    entry = outer.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    entry.field.add(name="value", number=2, type=message, type_name=".redaction.test.Inner", label=1)
    outer.field.add(name="by_name", number=3, type=message, type_name=".redaction.test.Outer.ByNameEntry", label=3)
    outer.field.add(name="client_secret", number=4, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    marked = outer.field.add(name="note", number=5, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    marked.options.debug_redact = True
    outer.field.add(name="page_token", number=6, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    outer.field.add(name="refresh_tokens", number=7, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=3)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("redaction.test.Outer"))


def test_secret_fields_are_redacted_at_any_depth() -> None:
    outer_type = _nested_message_type()
    request = outer_type(
        inner={"api_key": "s-inner", "password": b"s-bytes", "name": "kept-1"},
        items=[{"api_key": "s-item", "name": "kept-2"}],
        by_name={"a": {"api_key": "s-map", "name": "kept-3"}},
        client_secret="s-client",
        note="s-marked",
        page_token="cursor-kept",
        refresh_tokens=["s-list-1", "s-list-2"],
    )
    rendered = json.dumps(request_summary(request))
    for secret in ("s-inner", "s-bytes", "s-item", "s-map", "s-client", "s-marked", "s-list"):
        assert secret not in rendered
    for kept in ("kept-1", "kept-2", "kept-3", "cursor-kept"):
        assert kept in rendered
    summary = request_summary(request)
    assert summary["inner"]["apiKey"] == REDACTED
    assert "password" not in summary["inner"]
    assert summary["clientSecret"] == summary["note"] == REDACTED
    assert summary["refreshTokens"] == [REDACTED, REDACTED]
    # The caller's message is not changed.
    assert request.inner.api_key == "s-inner"


def test_a_real_secret_field_is_redacted() -> None:
    summary = request_summary(api_keys_pb2.AuthenticateApiKeyRequest(api_key="the-real-key-0123456789"))
    assert summary == {"apiKey": REDACTED}
    assert "the-real-key" not in json.dumps(request_summary(api_key_service_pb2.CreatedApiKey(secret="the-real-key")))


def test_a_request_is_logged_whole_then_cut() -> None:
    small = operator_service_pb2.RequeueJobsRequest(dry_run=True, filter={"reason": "ENGINE_CRASHED"})
    assert request_summary(small) == {"filter": {"reason": "ENGINE_CRASHED"}, "dryRun": True}
    large = operator_service_pb2.RequeueJobsRequest(filter={"ids": [f"job-{n:05d}" for n in range(1000)]})
    cut = request_summary(large)
    assert isinstance(cut, str)
    assert len(cut) == MAX_REQUEST_CHARS + 1
    assert request_summary(iter([small])) is None  # a request stream


# --- On a real jobs server ---------------------------------------------------------------


@dataclass
class Gated:
    """A jobs server from its real build(), and a channel to it."""

    running: RunningService
    registry: CollectorRegistry
    channel: grpc.Channel

    def call(self, method: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Message:
        """`method` (a MethodDescriptor) with an empty request."""
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        stub = self.channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return stub(request_type(), metadata=metadata, timeout=10)  # type: ignore[no-any-return]

    def count(self, method: Any, outcome: str) -> float:
        labels = {"method": f"{method.containing_service.full_name}/{method.name}", "outcome": outcome}
        return self.registry.get_sample_value(COUNTER, labels) or 0.0


@contextmanager
def gated_server(database_url: str, redis_url: str, storage_address: str, tokens: dict[str, str]) -> Iterator[Gated]:
    settings = service_settings(
        database_url, redis_url, storage_address, database_pool_size=4, max_workers=16, operator_tokens=tokens
    )
    registry = CollectorRegistry()
    with in_process(build, settings, registry=registry) as running, grpc.insecure_channel(running.address) as channel:
        yield Gated(running, registry, channel)


@pytest.fixture
def gated(fresh_database_url: str, redis_url: str, storage_server: RunningService) -> Iterator[Gated]:
    with gated_server(fresh_database_url, redis_url, storage_server.address, {"oncall": TOKEN}) as server:
        yield server


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    return caplog


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records as the service's JSON log lines would print them."""
    formatter = JsonFormatter("jobs")
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == AUDIT_LOGGER]


def test_every_operator_method_refuses_and_audits_each_call_without_a_valid_token(
    gated: Gated, audit: pytest.LogCaptureFixture
) -> None:
    assert {m.containing_service.full_name for m in OPERATOR_METHODS} == set(OPERATOR_APIS)
    for method in OPERATOR_METHODS:
        for metadata, expected in REFUSALS:
            before = gated.count(method, "UNAUTHENTICATED")
            audit.clear()
            with pytest.raises(grpc.RpcError) as refused:
                gated.call(method, metadata)
            where = f"{method.full_name} {metadata}"
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, where
            assert reason_of(refused.value) == expected, where
            assert gated.count(method, "UNAUTHENTICATED") == before + 1, where
            [line] = audit_lines(audit)
            assert line["event"] == "operator_call"
            assert line["method"] == f"{method.containing_service.full_name}/{method.name}"
            assert (line["operator"], line["outcome"], line["reason"]) == (None, "UNAUTHENTICATED", expected), where
            assert line["level"] == "warning"
            assert line["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
            assert "grpc-python" in line["user_agent"]
            rendered = json.dumps(line)
            assert TOKEN not in rendered, where
            assert WRONG_TOKEN not in rendered, where
    for method in OPERATOR_METHODS:
        assert gated.count(method, "OK") == 0


def outcome_of(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def test_a_valid_token_passes_the_gate_and_is_audited_with_its_operator(
    gated: Gated, audit: pytest.LogCaptureFixture
) -> None:
    """Whatever the servicer answers (not this file's subject), the call got past the gate."""
    [method] = [m for m in OPERATOR_METHODS if m.name == "GetQueueControl"]
    outcome = outcome_of(lambda: gated.call(method, (("authorization", f"bearer  {TOKEN} "),)))
    assert outcome != "UNAUTHENTICATED"
    [line] = audit_lines(audit)
    assert (line["operator"], line["outcome"], line["reason"]) == ("oncall", outcome, None)
    assert line["request"] == {}
    assert TOKEN not in json.dumps(line)
    assert gated.count(method, outcome) == 1


def test_a_server_without_operator_tokens_refuses_every_operator_call(
    fresh_database_url: str, redis_url: str, storage_server: RunningService, audit: pytest.LogCaptureFixture
) -> None:
    with gated_server(fresh_database_url, redis_url, storage_server.address, {}) as server:
        for method in OPERATOR_METHODS:
            for metadata in ((), (("authorization", f"Bearer {TOKEN}"),)):
                with pytest.raises(grpc.RpcError) as refused:
                    server.call(method, metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert reason_of(refused.value) == "OPERATOR_TOKENS_UNSET"
            assert server.count(method, "UNAUTHENTICATED") == 2
    assert len(audit_lines(audit)) == 2 * len(OPERATOR_METHODS)


def test_jobs_service_calls_need_no_token_and_are_not_audited(gated: Gated, audit: pytest.LogCaptureFixture) -> None:
    stub = jobs_service_pb2_grpc.JobsServiceStub(gated.channel)
    stats = stub.GetQueueStats(jobs_service_pb2.GetQueueStatsRequest(), timeout=10)
    assert stats.queued == 0
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetJob(jobs_service_pb2.GetJobRequest(id="00000000-0000-0000-0000-000000000000", tenant="t"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert audit_lines(audit) == []
    assert gated.registry.get_sample_value(COUNTER, {"method": "x", "outcome": "OK"}) is None


def test_the_operator_name_is_known_only_during_a_gated_call() -> None:
    """Servicers read who calls (e.g. PauseQueue's paused_by) from current_operator()."""
    seen: list[str] = []

    def behavior(request: Any, context: Any) -> Any:
        seen.append(current_operator())
        return request

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {TOKEN}"),)

        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

    gate = OperatorGate(OperatorTokens({"oncall": TOKEN}), ["svc"], CollectorRegistry())
    details = type("Details", (), {"method": "/svc/Method", "invocation_metadata": ()})()
    handler = gate.intercept_service(lambda _: grpc.unary_unary_rpc_method_handler(behavior), details)
    handler.unary_unary(operator_service_pb2.GetQueueControlRequest(), Context())
    assert seen == ["oncall"]
    assert current_operator() == ""


@pytest.mark.parametrize("kind", ["unary_stream", "stream_unary", "stream_stream"])
def test_streaming_methods_of_a_protected_service_are_gated_too(kind: str) -> None:
    """A streaming RPC added to an operator service later cannot slip past the gate."""
    reached: list[str] = []

    def unary_response(request: Any, context: Any) -> Any:
        reached.append(kind)
        return operator_service_pb2.QueueControl()

    def stream_response(request: Any, context: Any) -> Iterator[Any]:
        reached.append(kind)
        yield operator_service_pb2.QueueControl()

    make = getattr(grpc, f"{kind}_rpc_method_handler")
    behavior = stream_response if kind.endswith("_stream") else unary_response

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return ()

        def peer(self) -> str:
            return "ipv4:127.0.0.1:1"

    registry = CollectorRegistry()
    gate = OperatorGate(OperatorTokens({"oncall": TOKEN}), ["svc"], registry)
    details = type("Details", (), {"method": "/svc/Method", "invocation_metadata": ()})()
    handler = gate.intercept_service(lambda _: make(behavior), details)
    guarded = getattr(handler, kind)
    request: Any = iter([]) if kind.startswith("stream_") else operator_service_pb2.GetQueueControlRequest()

    def run() -> Any:
        result = guarded(request, Context())
        return list(result) if kind.endswith("_stream") else result

    with pytest.raises(Unauthenticated):
        run()
    assert reached == []
    assert registry.get_sample_value(COUNTER, {"method": "svc/Method", "outcome": "UNAUTHENTICATED"}) == 1
