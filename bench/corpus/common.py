"""What every family shares: the build context, the record of one generated file, and deterministic text."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Fixed dates make the tools' outputs repeatable (pdfTeX, LuaTeX and matplotlib honour SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH = "1700000000"


@dataclass(frozen=True)
class Context:
    """Where a family writes (``out``), where it keeps its intermediate files (``work``), and how much to build."""

    out: Path
    work: Path
    seed: int
    quick: bool

    def rng(self, *salt: int | str) -> np.random.Generator:
        """A generator of its own for each case, so one case's output never depends on which others were built."""
        keys = [self.seed, *(abs(hash_text(s)) if isinstance(s, str) else s for s in salt)]
        return np.random.default_rng(keys)

    def path(self, family: str, case: str) -> Path:
        return self.out / f"{family}__{case}.pdf"


@dataclass(frozen=True)
class Case:
    """One generated file. ``pages`` is the page count pikepdf (qpdf) should find, or None where the damage makes
    it undefined (a file cut in half); ``pdfium_pages`` the count PDFium should find, where the case promises one
    (damage that PDFium still reads)."""

    family: str
    name: str
    path: Path
    pages: int | None
    pdfium_pages: int | None = None


@dataclass(frozen=True)
class Family:
    """A family of documents: what it needs installed, and how to build it."""

    name: str
    summary: str
    build: Callable[[Context], list[Case]]
    executables: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The executables and Python modules this family needs that are not installed."""
        absent = [exe for exe in self.executables if shutil.which(exe) is None]
        absent += [f"python module {m}" for m in self.modules if importlib.util.find_spec(m) is None]
        return absent


def hash_text(text: str) -> int:
    """A stable hash (Python's own is salted per process)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are from at or an which not have has but "
    "its one all were can more their also been other into only when new time some than first these two may "
    "any after most over such where between through each both under many those while three same before "
    "compression document page image font stream object table figure section result value method system "
    "pressure temperature sample measured average error signal density function matrix vector energy "
    "library archive report budget quarter revenue growth market customer service contract invoice "
    "river mountain harbour village forest season winter summer journey letter garden morning evening"
)
_WORDS = tuple(_VOCABULARY.split())


def sentence(rng: np.random.Generator, low: int = 6, high: int = 18) -> str:
    words = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(low, high)))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: np.random.Generator, sentences: int = 5) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def title(rng: np.random.Generator, words: int = 4) -> str:
    return " ".join(str(w).capitalize() for w in rng.choice(_WORDS[60:], size=words))
