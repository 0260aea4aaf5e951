"""PDFSMALLER_ENV=production refuses unsafe settings, listing every reason at once; development allows them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from libs.settings import EnvReader, SettingsError
from services.gateway.settings import GatewaySettings
from services.scanner.settings import ScannerSettings

GATEWAY_BASE = {"REDIS_URL": "redis://127.0.0.1:1/0"}
API_KEYS = "tenant-a:0123456789abcdef0123"
SCANNER_BASE = {"STORAGE_ADDR": "127.0.0.1:1"}


def problems(build, environ: dict[str, str]) -> list[str]:
    try:
        build(environ)
    except SettingsError as error:
        return error.problems
    return []


def test_development_is_the_default_and_allows_anonymous_access_and_no_clamd() -> None:
    assert EnvReader({}).environment == "development"
    assert problems(GatewaySettings.from_env, GATEWAY_BASE) == []
    assert problems(ScannerSettings.from_env, SCANNER_BASE) == []


def test_production_gateway_refuses_to_run_without_api_keys() -> None:
    found = problems(GatewaySettings.from_env, {**GATEWAY_BASE, "PDFSMALLER_ENV": "production"})
    assert len(found) == 1
    assert "API_KEYS" in found[0]
    assert found[0].startswith("PDFSMALLER_ENV=production")
    assert (
        problems(GatewaySettings.from_env, {**GATEWAY_BASE, "PDFSMALLER_ENV": "production", "API_KEYS": API_KEYS}) == []
    )


def test_production_scanner_refuses_to_run_without_clamd() -> None:
    found = problems(ScannerSettings.from_env, {**SCANNER_BASE, "PDFSMALLER_ENV": "Production"})
    assert len(found) == 1
    assert "CLAMD_ADDR" in found[0]
    assert (
        problems(
            ScannerSettings.from_env, {**SCANNER_BASE, "PDFSMALLER_ENV": "production", "CLAMD_ADDR": "127.0.0.1:3310"}
        )
        == []
    )


def test_an_unknown_mode_is_a_problem_and_treated_as_production() -> None:
    found = problems(ScannerSettings.from_env, {**SCANNER_BASE, "PDFSMALLER_ENV": "prod"})
    assert any("PDFSMALLER_ENV='prod'" in problem for problem in found)
    assert any("CLAMD_ADDR" in problem for problem in found)


@pytest.mark.parametrize(
    ("service", "environ", "expected"),
    [
        # No API keys, and no Redis either: both reasons in one start.
        ("gateway", {}, ["API_KEYS is empty", "REDIS_URL is required"]),
        ("scanner", {"SCANNER_LISTEN": "nowhere"}, ["CLAMD_ADDR is not set", "SCANNER_LISTEN='nowhere'"]),
    ],
)
def test_a_production_service_does_not_start_and_says_every_reason(
    service: str, environ: dict[str, str], expected: list[str]
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"API_KEYS", "REDIS_URL", "CLAMD_ADDR", f"{service.upper()}_LISTEN"}
    }
    env.update({"PDFSMALLER_ENV": "production", **environ})
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    for reason in expected:
        assert reason in done.stderr, done.stderr[-2000:]
