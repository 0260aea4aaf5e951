"""`pdfsmaller-ops smoke` against the real stack: it passes on a healthy one and stops at the first failure
with what it saw (wrong URL, wrong key, a required dependency down, workers down).

A dependency down is a second real gateway beside the stack's backends (tests/plugins/stack.py
`gateway_beside`) with that dependency's address closed, behind an Envoy of its own, which gives it REST.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable

import pikepdf
import pytest

from devtools.stack.stack import Stack
from ops.cli import main
from ops.report import OpsError
from ops.smoke import Reply, RestApi, Sample, expect_not_a_pdf, verify_result
from tests.plugins.stack import API_KEYS, gateway_beside

STEPS = ["health", "upload", "compress", "download", "bad upload", "delete"]
KEYS_SETTING = ",".join(f"{tenant}:{key}" for tenant, key in API_KEYS.items())
# A tenant of its own for the rate-limited gateway, so its counters in the shared Redis touch no other test.
SLOW_KEY = "smoke-slow-key-0123456789abcdef"


def _step_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if " ... " in line]


def _results(out: str) -> dict[str, str]:
    pairs = (line.split(": ", 1) for line in out.splitlines() if " ... " not in line and ": " in line)
    return dict(pairs)


def _job_answers(url: str, job_id: str) -> int:
    return RestApi.at(url, API_KEYS["acme"]).call("GET", f"/v1/jobs/{job_id}").status


def test_the_shipped_pdf_is_small_and_has_text_and_an_image() -> None:
    sample = Sample.shipped()
    assert sample.data.startswith(b"%PDF-")
    assert len(sample.data) < 60_000
    assert sample.pages == 3
    with pikepdf.open(io.BytesIO(sample.data)) as pdf:
        first = pdf.pages[0]
        assert str(first.Resources.Font.F1.BaseFont) == "/Helvetica"
        assert len(first.get_images()) == 1


def test_smoke_passes_against_a_healthy_stack(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--url", stack.url, "--api-key", API_KEYS["acme"]]) == 0
    out = capsys.readouterr().out
    lines = _step_lines(out)
    assert [line.split(" ... ")[0] for line in lines] == STEPS
    assert all(" ... ok (" in line and line.endswith(" s)") for line in lines), lines
    results = _results(out)
    assert results["health"] in {"SERVING", "DEGRADED"}
    assert int(results["input_bytes"]) == len(Sample.shipped().data)
    assert 0 < int(results["output_bytes"]) < int(results["input_bytes"])
    assert 0 < float(results["ratio"]) < 1
    assert _job_answers(stack.url, results["job_id"]) == 404


def test_smoke_json_reads_the_key_from_the_environment(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDFSMALLER_API_KEY", API_KEYS["globex"])
    assert main(["--json", "smoke", "--url", stack.url + "/"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert [step["name"] for step in document["steps"]] == STEPS
    assert all(step["ok"] and step["seconds"] >= 0 for step in document["steps"])
    assert set(document["results"]) >= {"job_id", "health", "input_bytes", "output_bytes", "ratio"}


def test_a_wrong_url_fails_at_health_at_once_naming_it(closed_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://{closed_address}"
    assert main(["smoke", "--url", url]) == 1
    lines = _step_lines(capsys.readouterr().out)
    assert len(lines) == 1, lines
    assert lines[0].startswith("health ... FAILED (0.")
    assert f"cannot reach {url}: " in lines[0]
    assert "refused" in lines[0]


def test_a_wrong_key_fails_at_upload(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Health asks for no key, so the first call that checks it is the upload: 401 API_KEY_INVALID."""
    assert main(["smoke", "--url", stack.url, "--api-key", "not-a-key-0123456789"]) == 1
    lines = _step_lines(capsys.readouterr().out)
    assert [line.split(" ... ")[0] for line in lines] == ["health", "upload"]
    assert lines[0].startswith("health ... ok")
    assert "FAILED" in lines[1]
    assert "the API key was refused: 401 API_KEY_INVALID" in lines[1]


def test_a_required_dependency_down_fails_at_health_saying_which(
    stack: Stack, envoy_factory: Callable[..., str], closed_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway_beside(stack, SCANNER_ADDR=closed_address, API_KEYS=KEYS_SETTING) as gateway:
        url = envoy_factory(gateway.address)
        assert main(["smoke", "--url", url, "--api-key", API_KEYS["acme"]]) == 1
    lines = _step_lines(capsys.readouterr().out)
    assert len(lines) == 1, lines
    assert lines[0].startswith("health ... FAILED")
    assert f"{url} is NOT_SERVING (503): " in lines[0]
    assert "scanner NOT_SERVING (" in lines[0]


def test_an_optional_dependency_down_passes_and_is_reported(
    stack: Stack, envoy_factory: Callable[..., str], closed_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway_beside(stack, REDIS_URL=f"redis://{closed_address}", API_KEYS=KEYS_SETTING) as gateway:
        url = envoy_factory(gateway.address)
        assert main(["smoke", "--url", url, "--api-key", API_KEYS["acme"]]) == 0
    results = _results(capsys.readouterr().out)
    assert results["health"] == "DEGRADED"
    assert "redis NOT_SERVING (unreachable" in results["degraded"]


def test_a_tight_read_limit_is_waited_out_through_retry_after(
    stack: Stack, envoy_factory: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two reads back to back, then one every 2 s: polling, download and the GET after delete meet 429s."""
    limits = {"RATE_LIMIT_READ": "30/minute", "RATE_LIMIT_READ_BURST": "2"}
    with gateway_beside(stack, API_KEYS=f"smoke:{SLOW_KEY}", **limits) as gateway:
        url = envoy_factory(gateway.address)
        status = main(["smoke", "--url", url, "--api-key", SLOW_KEY])
    captured = capsys.readouterr()
    assert status == 0, captured.out
    assert "rate limited: GET /v1/jobs/" in captured.err
    assert [line.split(" ... ")[0] for line in _step_lines(captured.out)] == STEPS


def test_no_workers_fails_at_compress_with_the_state_and_deletes_the_job(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.kill_service("compressor")
    try:
        status = main(["smoke", "--url", stack.url, "--api-key", API_KEYS["acme"], "--timeout", "2"])
    finally:
        stack.start_service("compressor")
    out = capsys.readouterr().out
    assert status == 1
    lines = _step_lines(out)
    assert [line.split(" ... ")[0] for line in lines] == ["health", "upload", "compress"]
    job_id = _results(out)["job_id"]
    assert " ... FAILED (" in lines[2]
    assert lines[2].endswith(f"s): job {job_id} is still JOB_STATE_QUEUED 0% after 2 s")
    assert _job_answers(stack.url, job_id) == 404


def _reply(body: bytes, announced: str) -> Reply:
    return Reply("GET", "http://edge/v1/jobs/j/result", 200, {"x-content-sha256": announced}, body)


def test_the_download_check_refuses_a_hash_or_page_count_that_does_not_match() -> None:
    sample = Sample.shipped()
    good = hashlib.sha256(sample.data).hexdigest()
    verify_result(_reply(sample.data, good), {"output_sha256": good}, sample)
    with pytest.raises(OpsError, match="x-content-sha256 announced 00"):
        verify_result(_reply(sample.data, "00"), {"output_sha256": good}, sample)
    with pytest.raises(OpsError, match="the job records 00"):
        verify_result(_reply(sample.data, good), {"output_sha256": "00"}, sample)
    one_page = io.BytesIO()
    with pikepdf.open(io.BytesIO(sample.data)) as pdf:
        del pdf.pages[1:]
        pdf.save(one_page)
    shorter = hashlib.sha256(one_page.getvalue()).hexdigest()
    with pytest.raises(OpsError, match="the result has 1 pages, the uploaded PDF 3"):
        verify_result(_reply(one_page.getvalue(), shorter), {"output_sha256": shorter}, sample)


def test_the_bad_upload_check_wants_exactly_not_a_pdf() -> None:
    def refusal(status: int, reason: str) -> Reply:
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "gateway.pdfsmaller"}
        body = json.dumps({"code": 3, "message": "refused", "details": [info]}).encode()
        return Reply("POST", "http://edge/v1/jobs", status, {"content-type": "application/json"}, body)

    expect_not_a_pdf(refusal(400, "NOT_A_PDF"))
    with pytest.raises(OpsError, match="got 400 MALFORMED_PDF: refused, not 400 NOT_A_PDF"):
        expect_not_a_pdf(refusal(400, "MALFORMED_PDF"))
    with pytest.raises(OpsError, match="got 200 \\(no reason\\): "):
        expect_not_a_pdf(Reply("POST", "http://edge/v1/jobs", 200, {}, b'{"id": "j"}'))
