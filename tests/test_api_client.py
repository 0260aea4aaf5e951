"""The CLI's REST client against the whole system."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pikepdf
import pytest

from client import cli
from client.api import ApiClient, ApiError
from devtools.stack.stack import Stack
from services.compressor.tests.builders import signed_pdf
from tests.plugins.stack import API_KEYS

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"


def test_upload_wait_download(stack: Stack, tmp_path: Path) -> None:
    client = ApiClient(stack.url, API_KEYS["acme"])
    source = DATA / "pypdf__jpeg.pdf"
    job = client.upload(source, level="high", remove_metadata=True)
    assert (job["filename"], job["level"], job["remove_metadata"]) == ("pypdf__jpeg.pdf", "high", True)
    seen: list[str] = []
    done = client.wait(job["id"], timeout=60, on_update=lambda update: seen.append(update["state"]))
    assert done["state"] == seen[-1] == "JOB_STATE_SUCCEEDED"
    result = client.download(job["id"], tmp_path / "out" / "result.pdf")
    assert hashlib.sha256(result.read_bytes()).hexdigest() == done["output_sha256"]
    with pikepdf.open(result) as pdf:
        assert len(pdf.pages) == 1
    assert [p.name for p in result.parent.iterdir()] == ["result.pdf"]  # no partial file left


def test_errors_carry_the_reason(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as unknown:
        ApiClient(stack.url, API_KEYS["acme"]).job("00000000-0000-4000-8000-000000000000")
    assert (unknown.value.status, unknown.value.reason) == (404, "JOB_NOT_FOUND")
    with pytest.raises(ApiError) as unauthenticated:
        ApiClient(stack.url, "wrong-key-0123456789").job("00000000-0000-4000-8000-000000000000")
    assert unauthenticated.value.reason == "API_KEY_INVALID"
    not_pdf = tmp_path / "notes.pdf"
    not_pdf.write_text("just text")
    with pytest.raises(ApiError) as refused:
        ApiClient(stack.url, API_KEYS["acme"]).upload(not_pdf)
    assert refused.value.reason == "NOT_A_PDF"


def test_cli_upload_wait_download_and_status(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = ["--server", stack.url, "--api-key", API_KEYS["acme"]]
    out = tmp_path / "small.pdf"
    assert cli.main(["upload", str(DATA / "pypdf__libreoffice-form.pdf"), "-o", str(out), "--json", *server]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == job["output_sha256"]
    assert cli.main(["status", job["id"], *server]) == 0
    assert capsys.readouterr().out.startswith(f"{job['id']}  SUCCEEDED")
    assert cli.main(["status", "00000000-0000-4000-8000-000000000000", *server]) == 1
    assert "JOB_NOT_FOUND" in capsys.readouterr().err
    encrypted = DATA / "samplefiles__libreoffice-writer-password.pdf"
    assert cli.main(["upload", str(encrypted), "--wait", *server]) == 1  # refused at upload: non-zero
    assert "ENCRYPTED_PDF" in capsys.readouterr().err


def test_cli_says_a_signed_pdf_came_back_unchanged(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", stack.url, "--api-key", API_KEYS["acme"]]
    signed = signed_pdf(tmp_path / "signed.pdf")
    out = tmp_path / "result.pdf"
    assert cli.main(["upload", str(signed), "-o", str(out), *server]) == 0
    assert "SUCCEEDED" in (line := capsys.readouterr().out.strip().splitlines()[-1])
    assert line.endswith("returned unchanged: SIGNED_PDF"), line
    assert out.read_bytes() == signed.read_bytes()
