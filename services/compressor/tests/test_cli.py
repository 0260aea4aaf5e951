"""The `pdfsmaller` console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.compressor.cli import main

from .builders import DATA


def test_compress_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.pdf"
    rc = main(["compress", str(DATA / "pypdf__jpeg.pdf"), "-o", str(out), "--level", "high", "--json", "--in-process"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_size_bytes"] == out.stat().st_size
    assert report["level"] == "high"
    assert report["verification"]["passed"] is True


def test_compress_human_isolated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.pdf"
    rc = main(["compress", str(DATA / "pypdf__jpeg.pdf"), "-o", str(out), "--image-quality", "50"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ratio" in text
    assert "verified" in text


def test_failure_prints_reason_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = DATA / "samplefiles__libreoffice-writer-password.pdf"
    rc = main(["compress", str(src), "-o", str(tmp_path / "o.pdf"), "--in-process"])
    assert rc == 1
    assert "ENCRYPTED_PDF" in capsys.readouterr().err
    rc = main(["compress", str(src), "-o", str(tmp_path / "o.pdf"), "--json", "--in-process"])
    assert rc == 1
    assert json.loads(capsys.readouterr().out)["error"]["reason"] == "ENCRYPTED_PDF"


def test_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(tmp_path / "nope.pdf"), "-o", str(tmp_path / "o.pdf")]) == 1
    assert "IO_ERROR" in capsys.readouterr().err


def test_target_size_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.pdf"
    rc = main(
        ["compress", str(DATA / "pypdf__jpeg.pdf"), "-o", str(out), "--target-size", "60K", "--json", "--in-process"]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target_size_bytes"] == 60 * 1024


def test_usage_error() -> None:
    with pytest.raises(SystemExit) as err:
        main(["compress", "in.pdf"])  # -o missing
    assert err.value.code == 2
