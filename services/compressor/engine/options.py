"""Caller options, resource limits and the per-level profiles that drive every technique."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from libs import compression

from .errors import INVALID_OPTIONS, EngineError

# The levels and the options are defined in libs/compression.py; the profiles below are the engine's own
# (libs/tests/test_compression.py checks they name the same levels).
LEVEL_NAMES = compression.LEVEL_NAMES
DEFAULT_LEVEL = compression.DEFAULT_LEVEL


@dataclass(frozen=True)
class LevelProfile:
    """What a level allows. ``None`` thresholds mean "never" (lossless keeps every image bit-exact)."""

    name: str
    lossy: bool
    # Images displayed above ``downsample_above_dpi`` are resampled to ``target_dpi`` (colour/gray) or
    # ``bitonal_target_dpi`` (1-bit). None: never resample.
    downsample_above_dpi: float | None
    target_dpi: float | None
    bitonal_target_dpi: float | None
    jpeg_quality: int | None  # None: never re-encode as JPEG
    # Re-encode existing JPEGs only when the new one is at least this much smaller (avoid generation loss for
    # a few bytes).
    min_jpeg_gain: float
    # Visual gate: minimum SSIM of every compared page render against the input's.
    ssim_min: float
    # Colour gate: the largest CIELAB chroma difference of a 4 mm block, and the allowed summed-chroma ratio.
    chroma_diff_max: float
    chroma_ratio: tuple[float, float]
    drop_private_data: bool  # thumbnails, PieceInfo, application-private dictionaries
    quantize: bool  # graphics may be reduced to a 256-colour palette
    # Per-image gate for lossy replacements: SSIM of the replacement against the original at the same size.
    image_ssim_min: float
    # Per-image search (photographs whose placement is known): each gets the smallest resolution and JPEG quality
    # that keeps its page's gate, never below these floors. None: the level's fixed settings only.
    search_floor_dpi: float | None = None
    search_floor_quality: int | None = None


def _searching(profile: LevelProfile, floor_dpi: float, floor_quality: int) -> LevelProfile:
    return replace(profile, search_floor_dpi=floor_dpi, search_floor_quality=floor_quality)


LEVELS: dict[str, LevelProfile] = {
    "lossless": LevelProfile(
        "lossless", False, None, None, None, None, 1.0, 0.995, 3.0, (0.95, 1.05), False, False, 1.0
    ),
    "low": _searching(
        LevelProfile("low", True, 300.0, 225.0, 400.0, 85, 0.90, 0.985, 6.0, (0.90, 1.10), True, False, 0.96), 150.0, 60
    ),
    "medium": _searching(
        LevelProfile("medium", True, 200.0, 150.0, 300.0, 75, 0.92, 0.972, 9.0, (0.82, 1.22), True, False, 0.93),
        110.0,
        40,
    ),
    "high": _searching(
        LevelProfile("high", True, 150.0, 110.0, 200.0, 60, 0.95, 0.93, 15.0, (0.70, 1.40), True, True, 0.88), 96.0, 30
    ),
    "maximum": _searching(
        LevelProfile("maximum", True, 100.0, 80.0, 150.0, 45, 0.97, 0.905, 19.0, (0.62, 1.58), True, True, 0.84),
        72.0,
        25,
    ),
}


@dataclass(frozen=True)
class CompressOptions:
    level: str = DEFAULT_LEVEL
    image_quality: int | None = None  # 1..100; overrides the level's JPEG quality
    max_image_dpi: float | None = None  # cap on displayed image resolution (lossy levels only)
    grayscale: bool = False
    remove_metadata: bool = False
    linearize: bool = False
    target_size_bytes: int | None = None
    password: str | None = field(default=None, repr=False)
    allow_signature_break: bool = False

    def validate(self) -> None:
        """Every option within the definition's range; here None, not 0, means "not set"."""
        problems = []
        if self.level not in LEVELS:
            problems.append(f"level must be one of {', '.join(LEVEL_NAMES)}")
        for option in compression.OPTIONS:
            value = getattr(self, option.name)
            if option.ranged and value is not None and not option.in_range(float(value)):
                problems.append(f"{option.name} must be {option.bounds}")
        if problems:
            raise EngineError(INVALID_OPTIONS, "; ".join(problems))

    @property
    def profile(self) -> LevelProfile:
        return LEVELS[self.level]

    def public_dict(self) -> dict[str, Any]:
        """Options as recorded in the report (the password is never recorded)."""
        d = asdict(self)
        d["password"] = self.password is not None
        return d


@dataclass(frozen=True)
class Limits:
    """Resource limits of the isolated child process."""

    cpu_seconds: int = 300
    memory_bytes: int = 1 << 30
    wall_seconds: float | None = None  # default: 2 x cpu_seconds + 30 (a child waiting on I/O still ends)
    # Decompression-bomb caps, checked before anything is decoded.
    max_image_pixels: int = 200_000_000
    max_decoded_stream_bytes: int = 512 << 20
    max_pages: int = 20_000
    max_objects: int = 5_000_000

    def wall_timeout(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 2.0 * self.cpu_seconds + 30.0
