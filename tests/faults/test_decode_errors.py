"""Bytes that are not UTF-8 where the API expects text: a 400 JSON error, never a 500.

Envoy's transcoder percent-decodes the path and query into the gRPC message's
string fields as raw bytes; a byte like %FF makes the message unparseable, which
grpcio answered with INTERNAL "Exception deserializing request!" (HTTP 500).
libs.grpc_server turns it into INVALID_ARGUMENT `INVALID_REQUEST_ENCODING`.
"""

from __future__ import annotations

import pytest

from devtools.stack.stack import Stack
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS, stored_objects

pytestmark = pytest.mark.integration

PDF_HEAD = b"%PDF-1.7\n" + b"%" * 2048
INVALID_ARGUMENT = 3


@pytest.fixture
def acme(stack: Stack) -> RestClient:
    return RestClient(stack.url, API_KEYS["acme"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/%FF"),
        ("GET", "/v1/jobs/ab%C3%28cd"),  # a two-byte sequence broken by its second byte
        ("POST", "/v1/jobs/%FF:cancel"),
        ("DELETE", "/v1/jobs/%FE%FF"),
        ("GET", "/v1/jobs/%FF/result"),  # server-streaming download
    ],
)
def test_job_id_that_is_not_utf8_is_a_400(acme: RestClient, method: str, path: str) -> None:
    reply = acme.request(method, path)
    info = reply.assert_error(400, INVALID_ARGUMENT, "INVALID_REQUEST_ENCODING", "gateway.pdfsmaller")
    assert "UTF-8" in reply.json()["message"]
    assert info["reason"] == "INVALID_REQUEST_ENCODING"


def test_filename_that_is_not_utf8_is_a_400_and_nothing_is_stored(acme: RestClient, stack: Stack) -> None:
    before = stored_objects(stack)
    reply = acme.request("POST", "/v1/jobs?filename=report%FF.pdf", PDF_HEAD, {"content-type": "application/pdf"})
    reply.assert_error(400, INVALID_ARGUMENT, "INVALID_REQUEST_ENCODING", "gateway.pdfsmaller")
    assert stored_objects(stack) - before == set()


def test_valid_utf8_job_id_still_reaches_the_service(acme: RestClient) -> None:
    # %C3%A9 is "é": decodes fine, so the gateway answers as for any unknown id.
    reply = acme.request("GET", "/v1/jobs/%C3%A9")
    assert reply.status in (400, 404), reply.body
    assert reply.reason() != "INVALID_REQUEST_ENCODING"
