"""What a subcommand prints: one line per step with its time, and with --json one JSON document at the end.

    report = Reporter(as_json=False)
    with report.step("full backup"):
        ...                       # prints "full backup ... ok (12.3 s)", or "... FAILED (0.4 s): why"
    report.result("backup_id", "20261201T120000Z-full")
    return report.finish()       # exit status: 0, or 1 when a step failed

A step that raises OpsError fails with its message (no traceback); any other exception fails the
step with its type and message, and is re-raised only with --debug. Progress of a long step goes to
`report.progress(...)`, on stderr so a --json consumer reads only the document on stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO


class OpsError(Exception):
    """A failure the operator can act on: its message says what failed and what to do."""


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class Reporter:
    as_json: bool = False
    debug: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    steps: list[StepResult] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step and print how it ended; a failure is recorded, printed and re-raised as Failed."""
        started = time.monotonic()
        if not self.as_json:
            print(f"{name} ...", end="", file=self.out, flush=True)
        try:
            yield
        except Exception as error:
            seconds = time.monotonic() - started
            message = str(error) if isinstance(error, OpsError) else f"{type(error).__name__}: {error}"
            self.steps.append(StepResult(name, False, seconds, message))
            if not self.as_json:
                print(f" FAILED ({seconds:.1f} s): {message}", file=self.out, flush=True)
            if self.debug and not isinstance(error, OpsError):
                raise
            raise Failed(name, message) from error
        seconds = time.monotonic() - started
        self.steps.append(StepResult(name, True, seconds))
        if not self.as_json:
            print(f" ok ({seconds:.1f} s)", file=self.out, flush=True)

    def progress(self, message: str) -> None:
        print(f"  {message}", file=self.err, flush=True)

    def result(self, key: str, value: Any) -> None:
        """A figure the command reports (printed at the end, and a field of the JSON document)."""
        self.results[key] = value

    def finish(self) -> int:
        ok = all(step.ok for step in self.steps)
        if self.as_json:
            document = {
                "ok": ok,
                "steps": [
                    {
                        "name": s.name,
                        "ok": s.ok,
                        "seconds": round(s.seconds, 3),
                        **({"error": s.error} if s.error else {}),
                    }
                    for s in self.steps
                ],
                "results": self.results,
            }
            print(json.dumps(document, indent=2, default=str), file=self.out)
        else:
            for key, value in self.results.items():
                print(f"{key}: {value}", file=self.out)
        return 0 if ok else 1


class Failed(Exception):
    """A step failed; it has been reported already. The command stops and exits 1."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
