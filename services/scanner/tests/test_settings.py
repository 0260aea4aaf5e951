import pytest

from libs.settings import SettingsError
from services.scanner.settings import ScannerSettings


def test_defaults_need_storage_addr_only() -> None:
    settings = ScannerSettings.from_env({"STORAGE_ADDR": "127.0.0.1:50053"})
    assert settings.listen == "127.0.0.1:8054"
    assert settings.metrics_port == 9104
    assert settings.clamd_addr is None
    assert settings.clamd_timeout_seconds == 60


def test_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        ScannerSettings.from_env({"CLAMD_ADDR": "clamd", "CLAMD_TIMEOUT_SECONDS": "soon"})
    problems = "\n".join(raised.value.problems)
    assert "STORAGE_ADDR" in problems
    assert "CLAMD_ADDR" in problems
    assert "CLAMD_TIMEOUT_SECONDS" in problems


@pytest.mark.parametrize("address", ["127.0.0.1:3310", "/run/clamav/clamd.ctl", "unix:/tmp/clamd.sock"])
def test_clamd_address_forms(address: str) -> None:
    settings = ScannerSettings.from_env({"STORAGE_ADDR": "127.0.0.1:50053", "CLAMD_ADDR": address})
    assert settings.clamd_addr == address
