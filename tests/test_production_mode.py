"""PDFSMALLER_ENV=production refuses unsafe settings, listing every reason at once; development allows them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from libs.settings import EnvReader, SettingsError
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.scanner.settings import ScannerSettings

GATEWAY_BASE = {"REDIS_URL": "redis://127.0.0.1:1/0"}
API_KEYS = "tenant-a:0123456789abcdef0123"
SCANNER_BASE = {"STORAGE_ADDR": "127.0.0.1:1"}
JOBS_BASE = {
    "DATABASE_URL": "postgresql://127.0.0.1:1/jobs",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "STORAGE_ADDR": "127.0.0.1:1",
}
OPERATOR_TOKENS = "oncall:0123456789abcdef01234567"


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


def test_a_production_gateway_always_needs_a_key_even_with_api_keys_empty() -> None:
    """Keys come from the jobs database (ApiKeyService) too, so API_KEYS may be empty in production; but no
    call is anonymous there. Only development with API_KEYS empty lets a call without a key in."""
    production = {**GATEWAY_BASE, "PDFSMALLER_ENV": "production"}
    assert GatewaySettings.from_env(production).anonymous_access is False
    assert GatewaySettings.from_env({**production, "API_KEYS": API_KEYS}).anonymous_access is False
    assert GatewaySettings.from_env(GATEWAY_BASE).anonymous_access is True
    assert GatewaySettings.from_env({**GATEWAY_BASE, "API_KEYS": API_KEYS}).anonymous_access is False


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


def test_production_jobs_refuses_to_run_without_operator_tokens() -> None:
    assert problems(JobsSettings.from_env, JOBS_BASE) == []  # development: operator calls are refused
    found = problems(JobsSettings.from_env, {**JOBS_BASE, "PDFSMALLER_ENV": "production"})
    assert len(found) == 1
    assert found[0].startswith("PDFSMALLER_ENV=production")
    assert "OPERATOR_TOKENS" in found[0]
    production = {**JOBS_BASE, "PDFSMALLER_ENV": "production", "OPERATOR_TOKENS": OPERATOR_TOKENS}
    assert problems(JobsSettings.from_env, production) == []
    # A short token is a problem of its own, never quoted.
    found = problems(JobsSettings.from_env, {**production, "OPERATOR_TOKENS": "oncall:short-token"})
    assert any("at least 24 characters" in problem for problem in found)
    assert not any("short-token" in problem for problem in found)


def test_an_unknown_mode_is_a_problem_and_treated_as_production() -> None:
    found = problems(ScannerSettings.from_env, {**SCANNER_BASE, "PDFSMALLER_ENV": "prod"})
    assert any("PDFSMALLER_ENV='prod'" in problem for problem in found)
    assert any("CLAMD_ADDR" in problem for problem in found)


@pytest.mark.parametrize(
    ("service", "environ", "expected"),
    [
        # No Redis, and a bad listen address: both reasons in one start (no API_KEYS is no problem).
        ("gateway", {"GATEWAY_LISTEN": "nowhere"}, ["REDIS_URL is required", "GATEWAY_LISTEN='nowhere'"]),
        ("scanner", {"SCANNER_LISTEN": "nowhere"}, ["CLAMD_ADDR is not set", "SCANNER_LISTEN='nowhere'"]),
        ("jobs", {**JOBS_BASE, "JOBS_LISTEN": "nowhere"}, ["OPERATOR_TOKENS is empty", "JOBS_LISTEN='nowhere'"]),
    ],
)
def test_a_production_service_does_not_start_and_says_every_reason(
    service: str, environ: dict[str, str], expected: list[str]
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"API_KEYS", "REDIS_URL", "CLAMD_ADDR", "OPERATOR_TOKENS", f"{service.upper()}_LISTEN"}
    }
    env.update({"PDFSMALLER_ENV": "production", **environ})
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    for reason in expected:
        assert reason in done.stderr, done.stderr[-2000:]
