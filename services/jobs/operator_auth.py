"""The operator APIs' gate: a bearer token on every call, and an audit line for every call.

OperatorService and ApiKeyService steer the queue and hand out API keys, so each call must carry
`authorization: Bearer <token>` with one of OPERATOR_TOKENS, and each call, refused or not, is one
JSON line on the `audit` logger (operator name, method, peer, outcome, the request without secrets)
and one count in `pdfsmaller_operator_calls_total{method, outcome}`. Other services on the port
(JobsService, health, reflection) pass through untouched. Every kind of RPC of a protected service
is guarded, streaming ones too: a method added later cannot slip past the gate.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter

from libs.errors import ServiceError, Unauthenticated
from libs.named_secrets import NamedSecrets, secret_digest

AUDIT_LOGGER = "audit"
AUTHORIZATION_HEADER = "authorization"
BEARER_SCHEME = "bearer"
# A request is logged whole up to this size (filters, ids), then cut: a line stays readable.
MAX_REQUEST_CHARS = 2000
MAX_USER_AGENT_CHARS = 200
REDACTED = "[REDACTED]"
# A request field is never logged when its name (lower case, without underscores and a plural s) ends
# with one of these, whichever message holds it, or when its proto marks it `[debug_redact = true]`.
SECRET_NAME_ENDINGS = ("secret", "password", "apikey", "token", "credential")
# ...except paging cursors, which are opaque but not secret.
NOT_SECRET_NAMES = frozenset({"pagetoken", "nextpagetoken"})  # as normalized

_current_operator: contextvars.ContextVar[str] = contextvars.ContextVar("operator")


def current_operator() -> str:
    """The name (OPERATOR_TOKENS) of the operator whose call is being served, for servicers that record
    who did something (e.g. who paused the queue); "" outside a gated call."""
    return _current_operator.get("")


class OperatorTokens:
    """Maps a presented bearer token to the operator's name."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Stripped like the presented token: a Secret value often ends with a newline.
        self._tokens = NamedSecrets({name: token.strip() for name, token in tokens.items()})

    def operator_of(self, metadata: Collection[tuple[str, str | bytes]] | None) -> str:
        if not self._tokens:
            raise Unauthenticated("OPERATOR_TOKENS_UNSET", "this server has no operator tokens (OPERATOR_TOKENS)")
        match = self._tokens.name_of(secret_digest(_bearer_token(metadata or ())))
        if match is None:
            raise Unauthenticated("OPERATOR_TOKEN_INVALID", "the operator token is not valid")
        return match


def _bearer_token(metadata: Collection[tuple[str, str | bytes]]) -> str:
    """The token of the one `authorization: Bearer <token>` entry; refuses none, several, or another form."""
    values = [value for key, value in metadata if key.lower() == AUTHORIZATION_HEADER]
    if not values:
        raise Unauthenticated("OPERATOR_TOKEN_MISSING", "send metadata 'authorization: Bearer <operator token>'")
    value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if len(values) > 1 or scheme.lower() != BEARER_SCHEME or not token or any(c.isspace() for c in token):
        raise Unauthenticated(
            "OPERATOR_TOKEN_MALFORMED", "send one metadata entry 'authorization: Bearer <operator token>'"
        )
    return token


def _is_secret(field: FieldDescriptor) -> bool:
    name = field.name.lower().replace("_", "").removesuffix("s")
    marked = field.GetOptions().debug_redact
    return marked or (name.endswith(SECRET_NAME_ENDINGS) and name not in NOT_SECRET_NAMES)


def _redact(message: Message, depth: int = 0) -> None:
    """Replaces secret fields of `message` (a copy) in place: strings by REDACTED, anything else cleared."""
    if depth > 32:  # protobuf's own recursion limit is 100; no request of ours nests this deep
        return
    for field, value in message.ListFields():
        if _is_secret(field):
            if field.type == FieldDescriptor.TYPE_STRING and not field.message_type:
                if field.is_repeated:
                    value[:] = [REDACTED] * len(value)
                else:
                    setattr(message, field.name, REDACTED)
            else:
                message.ClearField(field.name)
        elif field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None:
                    for item in value.values():
                        _redact(item, depth + 1)
            elif field.is_repeated:
                for item in value:
                    _redact(item, depth + 1)
            else:
                _redact(value, depth + 1)


def request_summary(request: Any) -> Any:
    """The request as proto3 JSON with secret fields redacted, cut to MAX_REQUEST_CHARS (then a string);
    None for what is not a message (a request stream)."""
    if not isinstance(request, Message):
        return None
    copy = type(request)()
    copy.CopyFrom(request)
    _redact(copy)
    summary = json_format.MessageToDict(copy)
    rendered = json.dumps(summary)
    return summary if len(rendered) <= MAX_REQUEST_CHARS else rendered[:MAX_REQUEST_CHARS] + "…"


def _metadata_value(context: grpc.ServicerContext, key: str, limit: int) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return text[:limit]
    return None


class OperatorGate(grpc.ServerInterceptor):
    """Checks the token of, and audits, every call to the `protected` services."""

    def __init__(self, tokens: OperatorTokens, protected: Collection[str], registry: CollectorRegistry) -> None:
        self._tokens = tokens
        self._protected = frozenset(protected)
        self._log = logging.getLogger(AUDIT_LOGGER)
        # Audit lines are kept whatever LOG_LEVEL says (WARNING would drop the accepted calls').
        if self._log.getEffectiveLevel() > logging.INFO:
            self._log.setLevel(logging.INFO)
        self._calls = Counter(
            "pdfsmaller_operator_calls_total",
            "Calls to the operator APIs, by method and outcome (OK or the gRPC code of the refusal).",
            ["method", "outcome"],
            registry=registry,
        )

    def intercept_service(self, continuation: Callable[..., Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler is None or service not in self._protected:
            return handler
        name = f"{service}/{method}"
        serializers = (handler.request_deserializer, handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._guard(handler.unary_unary, name), *serializers)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._guard(handler.stream_unary, name), *serializers)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._guard_stream(handler.unary_stream, name), *serializers)
        return grpc.stream_stream_rpc_method_handler(self._guard_stream(handler.stream_stream, name), *serializers)

    def _guard(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            with _AuditedCall(self._tokens, self.audit, method, request, context):
                return behavior(request, context)

        return guarded

    def _guard_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Iterator[Any]]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _AuditedCall(self._tokens, self.audit, method, request, context):
                yield from behavior(request, context)

        return guarded

    def audit(
        self,
        method: str,
        operator: str | None,
        context: grpc.ServicerContext,
        request: Any,
        outcome: str,
        reason: str,
        started: float,
    ) -> None:
        self._calls.labels(method, outcome).inc()
        fields = {
            "event": "operator_call",
            "method": method,
            "operator": operator,
            "peer": context.peer(),
            "user_agent": _metadata_value(context, "user-agent", MAX_USER_AGENT_CHARS),
            "outcome": outcome,
            "reason": reason or None,
            "request": request_summary(request),
            "duration_seconds": round(time.monotonic() - started, 4),
        }
        level = logging.INFO if outcome == "OK" else logging.WARNING
        who = operator or "(refused)"
        self._log.log(level, "operator call %s by %s: %s", method, who, outcome, extra={"fields": fields})


class _AuditedCall:
    """One gated call: the token is checked on entry, the outcome audited on exit, exactly once."""

    def __init__(
        self,
        tokens: OperatorTokens,
        audit: Callable[[str, str | None, grpc.ServicerContext, Any, str, str, float], None],
        method: str,
        request: Any,
        context: grpc.ServicerContext,
    ) -> None:
        self._tokens = tokens
        self._audit = audit
        self._method = method
        self._request = request
        self._context = context
        self._started = time.monotonic()
        self._operator: str | None = None
        self._reset: contextvars.Token[str] | None = None

    def __enter__(self) -> _AuditedCall:
        try:
            self._operator = self._tokens.operator_of(self._context.invocation_metadata())
        except ServiceError as error:
            self._finish(error)
            raise
        self._reset = _current_operator.set(self._operator)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._reset is not None:
            # A response stream may end in another thread's context, where this token is foreign.
            with contextlib.suppress(ValueError):
                _current_operator.reset(self._reset)
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if error is None:
            outcome, reason = "OK", ""
        elif isinstance(error, ServiceError):
            outcome, reason = error.code.name, error.reason
        elif isinstance(error, GeneratorExit):  # the client went away during a response stream
            outcome, reason = grpc.StatusCode.CANCELLED.name, ""
        else:  # what the client gets: libs.grpc_server turns any other exception into INTERNAL
            outcome, reason = grpc.StatusCode.INTERNAL.name, ""
        self._audit(self._method, self._operator, self._context, self._request, outcome, reason, self._started)
