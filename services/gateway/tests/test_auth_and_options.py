from unittest import mock

import pytest
import redis

from libs.errors import InvalidArgument, Unauthenticated
from libs.settings import SettingsError
from services.gateway.auth import ANONYMOUS_TENANT, Authenticator, RateLimiter
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


def test_rate_limit_fails_open_when_redis_is_down() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    RateLimiter(unreachable, per_minute=1).check("acme")  # no exception


def test_options_validation() -> None:
    assert parse_options("", 0).level == parse_options("medium", 0).level
    assert parse_options("HIGH", 50).image_quality == 50
    with pytest.raises(InvalidArgument, match="level"):
        parse_options("ultra", 0)
    with pytest.raises(InvalidArgument) as caught:
        parse_options("low", 101)
    assert caught.value.reason == "INVALID_IMAGE_QUALITY"


def test_download_name() -> None:
    assert download_name("report.PDF") == "report-smaller.pdf"
    assert download_name("") == "document-smaller.pdf"


def test_settings_report_bad_api_keys_and_missing_redis() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env({"API_KEYS": "acme:short,:nokey"})
    assert len(caught.value.problems) == 3  # two bad keys + REDIS_URL
