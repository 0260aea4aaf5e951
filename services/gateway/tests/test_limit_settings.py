"""RATE_LIMIT*, QUOTA_* settings: defaults, the old RATE_LIMIT_PER_MINUTE, and every problem at once."""

from __future__ import annotations

import pytest

from libs.settings import SettingsError
from services.gateway.quotas import QuotaLimits
from services.gateway.ratelimit import Budget
from services.gateway.settings import GatewaySettings

BASE = {"REDIS_URL": "redis://127.0.0.1:1"}


def test_defaults_are_the_guides() -> None:
    settings = GatewaySettings.from_env(BASE)
    uploads, reads = settings.rate_limits[Budget.UPLOADS], settings.rate_limits[Budget.READS]
    assert (uploads.name, uploads.limit.amount, uploads.limit.get_expiry(), uploads.burst) == ("default", 100, 3600, 20)
    assert (reads.name, reads.limit.amount, reads.limit.get_expiry(), reads.burst) == ("read", 7200, 3600, 120)
    assert [w.name for w in uploads.windows()] == ["default-burst", "default"]
    assert uploads.windows()[0].seconds == 720  # 20 requests' worth of 100 an hour
    assert settings.quotas == QuotaLimits(0, 0)


def test_old_per_minute_setting_is_one_budget_for_every_call() -> None:
    settings = GatewaySettings.from_env({**BASE, "RATE_LIMIT_PER_MINUTE": "600"})
    uploads, reads = settings.rate_limits[Budget.UPLOADS], settings.rate_limits[Budget.READS]
    assert uploads is reads
    assert (uploads.limit.amount, uploads.limit.get_expiry(), uploads.burst) == (600, 60, 0)


def test_new_settings_parse() -> None:
    env = {**BASE, "RATE_LIMIT": "10/minute", "RATE_LIMIT_BURST": "0", "RATE_LIMIT_READ": "1000 per day"}
    env |= {"QUOTA_FILES_PER_DAY": "50", "QUOTA_BYTES_PER_DAY": "1000000"}
    settings = GatewaySettings.from_env(env)
    assert [w.name for w in settings.rate_limits[Budget.UPLOADS].windows()] == ["default"]
    assert settings.rate_limits[Budget.READS].limit.get_expiry() == 86400
    assert settings.quotas == QuotaLimits(files_per_day=50, bytes_per_day=1000000)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env(
            {**BASE, "RATE_LIMIT": "lots", "RATE_LIMIT_READ": "5/hour;1/second", "QUOTA_BYTES_PER_DAY": "-1"}
        )
    problems = caught.value.problems
    assert "RATE_LIMIT='lots' is not one rate limit like 100/hour" in problems
    assert "RATE_LIMIT_READ='5/hour;1/second' is not one rate limit like 100/hour" in problems
    assert "QUOTA_BYTES_PER_DAY=-1 is below the minimum 0" in problems


def test_old_and_new_rate_limit_settings_together_are_a_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        GatewaySettings.from_env({**BASE, "RATE_LIMIT_PER_MINUTE": "600", "RATE_LIMIT": "100/hour"})
    assert any("RATE_LIMIT_PER_MINUTE is the old setting" in problem for problem in caught.value.problems)
