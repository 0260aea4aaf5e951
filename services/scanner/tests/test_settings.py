import pytest

from libs.settings import SettingsError
from services.scanner.pdf_checks import IncompleteCheckPolicy
from services.scanner.settings import ScannerSettings


def test_defaults_need_storage_addr_only() -> None:
    settings = ScannerSettings.from_env({"STORAGE_ADDR": "127.0.0.1:50053"})
    assert settings.listen == "127.0.0.1:8054"
    assert settings.metrics_port == 9104
    assert settings.clamd_addr is None
    assert settings.clamd_timeout_seconds == 60
    assert settings.incomplete_check is IncompleteCheckPolicy.REFUSE


def test_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        ScannerSettings.from_env(
            {"CLAMD_ADDR": "clamd", "CLAMD_TIMEOUT_SECONDS": "soon", "SCANNER_INCOMPLETE_CHECK": "ignore"}
        )
    problems = "\n".join(raised.value.problems)
    assert "STORAGE_ADDR" in problems
    assert "CLAMD_ADDR" in problems
    assert "CLAMD_TIMEOUT_SECONDS" in problems
    assert "SCANNER_INCOMPLETE_CHECK='ignore'" in problems


@pytest.mark.parametrize("address", ["127.0.0.1:3310", "/run/clamav/clamd.ctl", "unix:/tmp/clamd.sock"])
def test_clamd_address_forms(address: str) -> None:
    settings = ScannerSettings.from_env({"STORAGE_ADDR": "127.0.0.1:50053", "CLAMD_ADDR": address})
    assert settings.clamd_addr == address


@pytest.mark.parametrize(
    ("value", "policy"),
    [("refuse", IncompleteCheckPolicy.REFUSE), ("Assume-Present", IncompleteCheckPolicy.ASSUME_PRESENT)],
)
def test_incomplete_check_policy(value: str, policy: IncompleteCheckPolicy) -> None:
    env = {"STORAGE_ADDR": "127.0.0.1:50053", "SCANNER_INCOMPLETE_CHECK": value}
    assert ScannerSettings.from_env(env).incomplete_check is policy
