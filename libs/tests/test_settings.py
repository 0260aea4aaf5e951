import pytest

from libs.settings import EnvReader, SettingsError


def test_every_problem_is_reported_at_once() -> None:
    env = EnvReader({"A_PORT": "x", "B_FLAG": "maybe", "C_ADDR": "nohost"})
    env.str("REQUIRED_ONE")
    env.int("A_PORT", 1)
    env.bool("B_FLAG", False)
    env.address("C_ADDR")
    with pytest.raises(SettingsError) as caught:
        env.done()
    problems = caught.value.problems
    assert len(problems) == 4
    assert any("REQUIRED_ONE is required" in p for p in problems)
    assert any("A_PORT" in p for p in problems)


def test_defaults_and_values() -> None:
    env = EnvReader({"N": "7", "F": "yes", "ADDR": "127.0.0.1:80"})
    assert env.int("N", 1) == 7
    assert env.int("MISSING", 3) == 3
    assert env.bool("F", False) is True
    assert env.address("ADDR") == "127.0.0.1:80"
    assert env.int("N", 1, minimum=10) == 1
    with pytest.raises(SettingsError, match="below the minimum"):
        env.done()
