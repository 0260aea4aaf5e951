"""Settings come from the environment, with every problem reported at once."""

from __future__ import annotations

import pytest

from libs.settings import SettingsError
from services.jobs.settings import JobsSettings


def test_defaults() -> None:
    settings = JobsSettings.from_env(
        {"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r:6379/0", "STORAGE_ADDR": "127.0.0.1:50053"}
    )
    assert (settings.listen, settings.metrics_port) == ("127.0.0.1:8052", 9102)
    assert (settings.retention_hours, settings.max_attempts, settings.sweep_interval_seconds) == (168, 3, 30.0)
    assert (settings.retry_backoff_base_seconds, settings.retry_backoff_cap_seconds) == (2.0, 300.0)
    assert (settings.max_outage_retries, settings.outage_lease_grace_seconds) == (100, 60.0)


def test_retry_settings_are_checked() -> None:
    with pytest.raises(SettingsError) as caught:
        JobsSettings.from_env(
            {
                "DATABASE_URL": "postgresql://db/x",
                "REDIS_URL": "redis://r:6379/0",
                "STORAGE_ADDR": "127.0.0.1:50053",
                "RETRY_BACKOFF_BASE_SECONDS": "-1",
                "RETRY_BACKOFF_CAP_SECONDS": "soon",
                "OUTAGE_LEASE_GRACE_SECONDS": "-5",
                "MAX_OUTAGE_RETRIES": "-1",
            }
        )
    problems = "\n".join(caught.value.problems)
    for name in ("RETRY_BACKOFF_BASE_SECONDS", "RETRY_BACKOFF_CAP_SECONDS", "OUTAGE_LEASE_GRACE_SECONDS"):
        assert name in problems
    assert "MAX_OUTAGE_RETRIES" in problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        JobsSettings.from_env({"STORAGE_ADDR": "nohost", "MAX_ATTEMPTS": "0", "RETENTION_HOURS": "x"})
    problems = "\n".join(caught.value.problems)
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_ADDR", "MAX_ATTEMPTS", "RETENTION_HOURS"):
        assert name in problems
