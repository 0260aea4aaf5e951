import pytest

from libs.errors import InvalidArgument
from services.storage.keys import MAX_KEY_LENGTH, validate_key


@pytest.mark.parametrize(
    "key",
    ["a", "jobs/0f3c/input.pdf", "x-1_2.3/y", "a" * MAX_KEY_LENGTH, "9/8/7"],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        "a..b",
        "a/./b",
        ".hidden",
        "a//b",
        "a/",
        "Upper/case",
        "space here",
        "a\\b",
        "a\x00b",
        "-dash",
        "ü",
        "a" * (MAX_KEY_LENGTH + 1),
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_key(key)
    assert raised.value.reason == "INVALID_KEY"
