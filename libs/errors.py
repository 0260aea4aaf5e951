"""Typed domain errors and their mapping to google.rpc.Status with ErrorInfo.

Servicers raise a `ServiceError` subclass with a stable UPPER_SNAKE reason; the
server interceptor (libs.grpc_server) turns it into a rich status. Clients use
`reason_of()` / `from_rpc()` to read the reason back from a downstream
call. Exception text from elsewhere never reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class ServiceError(Exception):
    """An error with a gRPC code, a stable reason and a client-safe message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.domain = domain
        self.metadata = dict(metadata or {})
        if code is not None:
            self.code = code

    def to_status(self, default_domain: str = "pdfsmaller") -> status_pb2.Status:
        """The rich status; ErrorInfo.domain is the raising service's unless the error names another."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=self.domain or default_domain, metadata=self.metadata
        )
        detail = status_pb2.Status().details.add()
        detail.Pack(info)
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.append(detail)
        return status


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def internal_status(trace_id: str, domain: str = "pdfsmaller") -> status_pb2.Status:
    """The generic status for an unexpected exception; the log has the details."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain, metadata={"trace_id": trace_id})
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the server log for trace_id")
    status.details.add().Pack(info)
    return status


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo carried by a failed call, if any."""
    if not isinstance(error, grpc.Call):
        return None
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call, or its status code name."""
    info = error_info(error)
    if info is not None:
        return info.reason
    code = error.code() if isinstance(error, grpc.Call) else None
    return code.name if code is not None else "UNKNOWN"


_PASS_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.ABORTED: Aborted,
}


def from_rpc(error: grpc.RpcError, dependency: str) -> ServiceError:
    """Translate a downstream failure into an error to raise upstream.

    Client-caused errors with an ErrorInfo keep their code, reason and message;
    anything else becomes UNAVAILABLE naming the dependency, never its text.
    """
    code = error.code() if isinstance(error, grpc.Call) else None
    info = error_info(error)
    if code in _PASS_THROUGH and info is not None:
        message = error.details() if isinstance(error, grpc.Call) else ""
        return _PASS_THROUGH[code](info.reason, message or info.reason, domain=info.domain, metadata=info.metadata)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            "DEPENDENCY_TIMEOUT", f"{dependency} did not answer in time", metadata={"dependency": dependency}
        )
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE", f"{dependency} is unavailable; retry later", metadata={"dependency": dependency}
    )
