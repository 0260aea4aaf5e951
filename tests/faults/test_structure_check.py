"""Issue 7 item 1: the PDF structure check fails closed, end to end (REST through Envoy).

The bypass file shape (a /Launch open action plus a dictionary key whose name is not UTF-8)
used to crash the scanner's check, which then looked clean, so the upload was accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from devtools.stack.stack import Stack
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from services.scanner.tests import pdfs
from tests.e2e_client import Reply, RestClient
from tests.plugins.figures import Figures
from tests.plugins.stack import API_KEYS, gateway_beside, stored_objects

pytestmark = pytest.mark.integration

GATEWAY_DOMAIN = "gateway.pdfsmaller"
SCANNER_DOMAIN = "scanner.pdfsmaller"


def _client(stack: Stack) -> RestClient:
    return RestClient(stack.url, API_KEYS["acme"])


def _new_inputs(stack: Stack, before: set[str]) -> set[str]:
    """Uploads stored since ``before``; outputs are left out (a job queued by an earlier test may finish now)."""
    return {key for key in stored_objects(stack) - before if key.startswith("inputs/")}


def _outcome(reply: Reply) -> str:
    return "accepted" if reply.status == 200 else f"refused ({reply.reason()})"


def test_bypass_file_shape_is_refused(stack: Stack, figures: Figures) -> None:
    objects_before = stored_objects(stack)
    reply = _client(stack).upload(pdfs.launch_with_non_utf8_key(), filename="odd-key-launch.pdf")
    figures.add("bypass file shape", _outcome(reply))
    info = reply.assert_error(400, 3, "ACTIVE_CONTENT_REFUSED", GATEWAY_DOMAIN)
    assert info["metadata"]["kinds"] == "launch"
    assert _new_inputs(stack, objects_before) == set()  # the refused upload is deleted


def test_plain_launch_action_is_still_refused(stack: Stack, figures: Figures) -> None:
    reply = _client(stack).upload(pdfs.with_launch_action(), filename="launch.pdf")
    figures.add("plain /Launch PDF", _outcome(reply))
    reply.assert_error(400, 3, "ACTIVE_CONTENT_REFUSED", GATEWAY_DOMAIN)


def test_clean_pdf_is_still_accepted(stack: Stack, figures: Figures) -> None:
    reply = _client(stack).upload(pdfs.plain(2), filename="clean.pdf")
    figures.add("clean PDF", _outcome(reply))
    assert reply.status == 200, reply.body
    assert reply.json()["state"] == "JOB_STATE_QUEUED"


def test_incomplete_check_is_refused_with_its_reason(stack: Stack, figures: Figures) -> None:
    """A file the check cannot walk to the end (nesting deeper than it goes) never passes as clean."""
    objects_before = stored_objects(stack)
    reply = _client(stack).upload(pdfs.nested_too_deep(), filename="deep.pdf")
    figures.add("incompletely checked PDF", _outcome(reply))
    reply.assert_error(400, 3, "PDF_CHECK_INCOMPLETE", SCANNER_DOMAIN)
    assert "could not be fully checked" in reply.json()["message"]
    assert _new_inputs(stack, objects_before) == set()  # the refused upload is deleted


@contextmanager
def _scanner_assuming_content(stack: Stack) -> Iterator[str]:
    """A real scanner with SCANNER_INCOMPLETE_CHECK=assume-present on the stack's storage; yields its address."""
    settings = ScannerSettings.from_env(
        {
            "SCANNER_LISTEN": "127.0.0.1:0",
            "SCANNER_METRICS_PORT": "0",
            "STORAGE_ADDR": stack.service("storage").address,
            "SCANNER_INCOMPLETE_CHECK": "assume-present",
        }
    )
    scanner = build_scanner(settings).start()
    try:
        yield scanner.address
    finally:
        scanner.stop(grace=0)


@pytest.mark.parametrize(
    ("refuse", "expected"),
    [("launch", "refused (ACTIVE_CONTENT_REFUSED)"), ("none", "accepted")],
)
def test_assume_present_policy_hands_the_file_to_the_active_content_policy(
    stack: Stack, envoy_factory: Callable[..., str], figures: Figures, refuse: str, expected: str
) -> None:
    with (
        _scanner_assuming_content(stack) as scanner_addr,
        gateway_beside(stack, SCANNER_ADDR=scanner_addr, REFUSE_ACTIVE_CONTENT=refuse) as gateway,
    ):
        reply = RestClient(envoy_factory(gateway.address)).upload(pdfs.nested_too_deep(), filename="deep.pdf")
    figures.add(f"incomplete check, assume-present, refuse={refuse}", _outcome(reply))
    assert _outcome(reply) == expected, reply.body
    if reply.status != 200:
        info = reply.assert_error(400, 3, "ACTIVE_CONTENT_REFUSED", GATEWAY_DOMAIN)
        assert "launch" in info["metadata"]["kinds"]
