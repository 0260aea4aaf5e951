"""Figures that fault and hostile-input tests measure, printed at the end of every run.

A test asks for `figures` and records lines (`figures.add("storage outage 5 s", "jobs lost 0 of 12")`);
`make test` then ends with one section listing them, so a run's log carries the numbers the
closing notes and docs/operations.md quote, without `-s`.
"""

from __future__ import annotations

import pytest
from _pytest.terminal import TerminalReporter


class Figures:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def add(self, topic: str, text: str) -> None:
        self.lines.append((topic, text))


_KEY = pytest.StashKey[Figures]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = Figures()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return request.config.stash[_KEY]


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    collected = config.stash[_KEY].lines
    if not collected:
        return
    terminalreporter.section("fault and hostile-input figures")
    width = max(len(topic) for topic, _ in collected)
    for topic, text in collected:
        terminalreporter.line(f"{topic:<{width}}  {text}")
