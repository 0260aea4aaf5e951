"""The per-run report: what was done, what it saved, how the output was verified."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

KINDS = ("images", "fonts", "content", "other")


@dataclass
class TechniqueSaving:
    name: str
    saved_bytes: int
    detail: str = ""


@dataclass
class Verification:
    """Figures of the verification of the chosen output (or of the best rejected candidate)."""

    passed: bool = False
    failures: list[str] = field(default_factory=list)  # reason codes: pages, opens, ssim, color, text, ...
    pages_in: int = 0
    pages_out: int = 0
    pages_second_parser: int | None = None
    pages_compared: list[int] = field(default_factory=list)  # 1-based page numbers rendered and compared
    render_dpi: float = 0.0
    ssim_min: float | None = None
    ssim_min_page: int | None = None
    ssim_threshold: float = 0.0
    chroma_diff_max: float | None = None
    chroma_ratio_min: float | None = None
    chroma_ratio_max: float | None = None
    identical_renders: bool | None = None
    text_words_in: int = 0
    text_recall: float | None = None
    fields_in: int = 0
    fields_out: int = 0
    links_in: int = 0
    links_out: int = 0
    outlines_in: int = 0
    outlines_out: int = 0
    seconds: float = 0.0


# Why a run's output is the input's own bytes (``kept_original_reason``). Stable codes; never rename one.
NOT_SMALLER = "NOT_SMALLER"  # a candidate passed verification, none was smaller
VERIFICATION_FAILED = "VERIFICATION_FAILED"  # every candidate failed verification
SIGNED = "SIGNED_PDF"  # signed or certified: any rewrite would invalidate the signature
DAMAGED = "DAMAGED_PDF"  # damaged so that it cannot be rewritten safely, yet it opens and renders as it is
KEPT_ORIGINAL_REASONS = (NOT_SMALLER, VERIFICATION_FAILED, SIGNED, DAMAGED)


@dataclass
class Report:
    input_size_bytes: int
    output_size_bytes: int = 0
    level: str = "medium"
    options: dict[str, Any] = field(default_factory=dict)
    kept_original: bool = False
    kept_original_reason: str | None = None  # one of KEPT_ORIGINAL_REASONS
    kept_original_detail: str | None = None
    pages: int = 0
    repaired: bool = False
    bytes_by_kind_before: dict[str, int] = field(default_factory=dict)
    bytes_by_kind_after: dict[str, int] = field(default_factory=dict)
    techniques: list[TechniqueSaving] = field(default_factory=list)
    verification: Verification = field(default_factory=Verification)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # every candidate tried and its verdict
    target_size_bytes: int | None = None
    target_met: bool | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seconds_by_phase: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.output_size_bytes / self.input_size_bytes if self.input_size_bytes else 1.0

    @property
    def saved_bytes(self) -> int:
        return self.input_size_bytes - self.output_size_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 6)
        d["saved_bytes"] = self.saved_bytes
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["techniques"] = [TechniqueSaving(**t) for t in d.get("techniques", [])]
        vnames = {f.name for f in fields(Verification)}
        kw["verification"] = Verification(**{k: v for k, v in d.get("verification", {}).items() if k in vnames})
        return cls(**kw)
