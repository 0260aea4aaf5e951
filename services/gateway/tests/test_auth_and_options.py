from unittest import mock

import pytest
from google.protobuf import struct_pb2
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

from libs.errors import InvalidArgument, Unauthenticated
from libs.settings import SettingsError
from services.gateway.auth import ANONYMOUS_TENANT, Authenticator
from services.gateway.convert import download_name, parse_options, to_public
from services.gateway.settings import GatewaySettings


def _context(metadata: tuple[tuple[str, str], ...]) -> mock.Mock:
    context = mock.Mock()
    context.invocation_metadata.return_value = metadata
    return context


def test_no_keys_means_anonymous() -> None:
    assert Authenticator({}).tenant_of(_context(())) == ANONYMOUS_TENANT


def test_keys_map_to_tenants() -> None:
    auth = Authenticator({"acme": "k" * 20, "globex": "g" * 20})
    assert auth.tenant_of(_context((("x-api-key", "g" * 20),))) == "globex"
    with pytest.raises(Unauthenticated) as missing:
        auth.tenant_of(_context(()))
    assert missing.value.reason == "API_KEY_MISSING"
    with pytest.raises(Unauthenticated) as wrong:
        auth.tenant_of(_context((("x-api-key", "nope"),)))
    assert wrong.value.reason == "API_KEY_INVALID"


def _options(**fields: object) -> public.CreateJobRequest:
    return public.CreateJobRequest(**fields)  # type: ignore[arg-type]


def test_options_validation() -> None:
    assert parse_options(_options()).level == parse_options(_options(level="medium")).level
    parsed = parse_options(_options(level="HIGH", image_quality=50, grayscale=True, target_size_bytes=10_000))
    assert (parsed.image_quality, parsed.grayscale, parsed.target_size_bytes) == (50, True, 10_000)
    # The public API's reason codes and messages (docs/api.md), unchanged since they were first published.
    for fields, reason, message in [
        ({"level": "ultra"}, "INVALID_LEVEL", "level must be one of lossless, low, medium, high, maximum"),
        ({"level": " "}, "INVALID_LEVEL", "level must be one of lossless, low, medium, high, maximum"),
        ({"image_quality": 101}, "INVALID_IMAGE_QUALITY", "image_quality must be 1-100 (0 for the level's default)"),
        ({"max_image_dpi": 5}, "INVALID_MAX_IMAGE_DPI", "max_image_dpi must be 10-2400 (0 for the level's)"),
        ({"target_size_bytes": -1}, "INVALID_TARGET_SIZE", "target_size_bytes must not be negative"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            parse_options(_options(**fields))
        assert (caught.value.reason, caught.value.message) == (reason, message)


def test_a_job_shows_its_options_as_uploaded() -> None:
    options = parse_options(_options(level="Low", max_image_dpi=96, linearize=True, allow_signature_break=True))
    shown = to_public(jobs.Job(id="j", options=options))
    assert (shown.level, shown.max_image_dpi, shown.linearize, shown.allow_signature_break) == ("low", 96, True, True)
    assert (shown.image_quality, shown.grayscale, shown.target_size_bytes) == (0, False, 0)
    assert to_public(jobs.Job(id="j")).level == "medium"  # UNSPECIFIED reads as the default


def test_a_job_says_when_its_result_is_the_original_and_why() -> None:
    report = struct_pb2.Struct()
    report.update({"kept_original": True, "kept_original_reason": "SIGNED_PDF", "ratio": 1.0})
    kept = to_public(jobs.Job(id="j", state=jobs.JOB_STATE_SUCCEEDED, report=report))
    assert (kept.kept_original, kept.kept_original_reason) == (True, "SIGNED_PDF")
    report.update({"kept_original": False, "kept_original_reason": None})
    smaller = to_public(jobs.Job(id="j", state=jobs.JOB_STATE_SUCCEEDED, report=report))
    assert (smaller.kept_original, smaller.kept_original_reason) == (False, "")


def test_download_name() -> None:
    assert download_name("report.PDF") == "report-smaller.pdf"
    assert download_name("") == "document-smaller.pdf"


def test_settings_report_bad_api_keys_and_missing_redis() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env({"API_KEYS": "acme:short,:nokey"})
    assert len(caught.value.problems) == 3  # two bad keys + REDIS_URL


def test_active_content_policy_setting() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    assert GatewaySettings.from_env(env).refuse_active_content == {"launch"}
    assert GatewaySettings.from_env({**env, "REFUSE_ACTIVE_CONTENT": "none"}).refuse_active_content == set()
    both = GatewaySettings.from_env({**env, "REFUSE_ACTIVE_CONTENT": "JavaScript, launch"})
    assert both.refuse_active_content == {"javascript", "launch"}
    with pytest.raises(SettingsError, match="unknown kinds"):
        GatewaySettings.from_env({**env, "REFUSE_ACTIVE_CONTENT": "macros"})
