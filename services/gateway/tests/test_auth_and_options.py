from unittest import mock

import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public

from libs.errors import InvalidArgument, Unauthenticated
from libs.settings import SettingsError
from services.gateway.auth import ANONYMOUS_TENANT, Authenticator
from services.gateway.convert import download_name, parse_options
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
    for fields, reason in [
        ({"level": "ultra"}, "INVALID_LEVEL"),
        ({"image_quality": 101}, "INVALID_IMAGE_QUALITY"),
        ({"max_image_dpi": 5}, "INVALID_MAX_IMAGE_DPI"),
        ({"target_size_bytes": -1}, "INVALID_TARGET_SIZE"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            parse_options(_options(**fields))
        assert caught.value.reason == reason


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
