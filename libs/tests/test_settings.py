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


@pytest.mark.parametrize(("raw", "level"), [("", "INFO"), ("debug", "DEBUG"), (" Warning ", "WARNING")])
def test_log_level_takes_logging_names_in_any_case(raw: str, level: str) -> None:
    env = EnvReader({"LOG_LEVEL": raw} if raw else {})
    assert env.log_level() == level
    env.done()


def test_a_bad_log_level_is_a_settings_problem_not_a_crash_at_logging_set_up() -> None:
    env = EnvReader({"LOG_LEVEL": "LOUD"})
    assert env.log_level() == "INFO"
    with pytest.raises(SettingsError, match="LOG_LEVEL='LOUD' is not one of DEBUG, INFO"):
        env.done()


def test_named_secrets_parse_and_each_bad_entry_is_a_problem_that_never_quotes_a_secret() -> None:
    good = EnvReader({"TOKENS": " oncall:aaaaaaaaaaaaaaaa , ci-bot:bbbbbbbbbbbbbbbb,"})
    assert good.named_secrets("TOKENS") == {"oncall": "a" * 16, "ci-bot": "b" * 16}
    good.done()

    secrets = {"short": "tiny", "twice": "cccccccccccccccc", "spaced": "dddddddd dddddddd", "name": "e" * 16}
    raw = ",".join(
        [
            f"a:{secrets['short']}",
            f"dup:{secrets['twice']}",
            f"dup:{secrets['twice']}",
            f"b:{secrets['spaced']}",
            f"bad name:{secrets['name']}",
            "no-separator",
        ]
    )
    env = EnvReader({"TOKENS": raw})
    assert env.named_secrets("TOKENS") == {"dup": secrets["twice"]}
    with pytest.raises(SettingsError) as caught:
        env.done()
    problems = caught.value.problems
    assert len(problems) == 5
    assert any("'dup' twice" in problem for problem in problems)
    assert any("'b' has a secret with white space" in problem for problem in problems)
    assert not any(secret in problem for problem in problems for secret in secrets.values())
