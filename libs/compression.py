"""The compression options, defined once: the levels, every option, and what is derived from them.

Everything that names an option reads it here: the gateway's and the jobs service's validation (the
reason codes and messages the API returns), the level's one spelling (its name, ``"medium"``, in the
public API, the database and the engine; the number only on the wire, as
``pdfsmaller.jobs.v1.CompressionLevel``), the engine's keyword arguments and the CLIs' flags.
libs/tests/test_compression.py checks the protos and the engine against it, so an option defined here
and missing from a proto or from the engine (or the other way round) fails a test.

"Values" are a plain mapping: ``"level"`` by name and each option as the protos carry it, where the
proto3 default (0, False) means "not set": the level decides.

Loading this imports only the standard library, so the stdlib-only client CLI and the engine (no
gRPC) read the definition too; the functions that raise service errors or build protobuf messages
import those when called.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
    from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

    from libs.errors import InvalidArgument


@dataclass(frozen=True)
class Level:
    name: str
    number: int  # its pdfsmaller.jobs.v1.CompressionLevel value
    help: str


# From the least to the most aggressive (a target size tries the levels after the requested one in this order).
LEVELS: tuple[Level, ...] = (
    Level("lossless", 1, "renders stay pixel-identical"),
    Level("low", 2, "light lossy image compression"),
    Level("medium", 3, "balanced size and quality"),
    Level("high", 4, "smaller, images visibly softer up close"),
    Level("maximum", 5, "smallest, for reading on screen"),
)
LEVEL_NAMES: tuple[str, ...] = tuple(level.name for level in LEVELS)
DEFAULT_LEVEL = "medium"
INVALID_LEVEL = "INVALID_LEVEL"
LEVEL_MESSAGE = f"level must be one of {', '.join(LEVEL_NAMES)}"
_LEVEL_BY_NAME = {level.name: level for level in LEVELS}
_LEVEL_BY_NUMBER = {level.number: level for level in LEVELS}

_SIZE = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,6})?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A size flag: 500000, 800K, 1.5M, 2G (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500000, 800K, 1.5M)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(float(match.group(1)) * factor)


@dataclass(frozen=True)
class Option:
    """One option besides the level; its proto3 default (0, False) means "not set"."""

    name: str
    type: type[int] | type[bool]
    help: str
    # Integers: the allowed range besides "not set" (maximum None: no upper bound), the reason code of a
    # value outside it, and what "not set" stands for in that error's message.
    minimum: int = 0
    maximum: int | None = None
    reason: str = ""
    unset_means: str = ""
    # The engine's value when not set (None: the level decides).
    default: int | bool | None = None
    # CLI flag: how its value reads and how help shows it.
    parse: Callable[[str], int] = int
    metavar: str | None = None

    @property
    def unset(self) -> int | bool:
        return self.type()

    @property
    def ranged(self) -> bool:
        return self.type is not bool

    def in_range(self, value: float) -> bool:
        return self.minimum <= value and (self.maximum is None or value <= self.maximum)

    def allows(self, value: Any) -> bool:
        """Whether a value in proto form (unset or in range) is valid."""
        return not self.ranged or value == self.unset or self.in_range(value)

    @property
    def error_message(self) -> str:
        """The InvalidArgument message of a value outside the range, worded as the API always has."""
        if self.maximum is None and self.minimum <= 1:
            return f"{self.name} must not be negative"
        upper = f"-{self.maximum}" if self.maximum is not None else " or more"
        return f"{self.name} must be {self.minimum}{upper} (0 for {self.unset_means})"

    @property
    def bounds(self) -> str:
        """The range in words, for messages where "not set" is spelled otherwise (the engine's None)."""
        if self.maximum is None:
            return "positive" if self.minimum == 1 else f"at least {self.minimum}"
        return f"{self.minimum}..{self.maximum}"


OPTIONS: tuple[Option, ...] = (
    Option(
        "image_quality",
        int,
        "JPEG quality 1-100 overriding the level's (0: the level's)",
        minimum=1,
        maximum=100,
        reason="INVALID_IMAGE_QUALITY",
        unset_means="the level's default",
        metavar="Q",
    ),
    Option(
        "max_image_dpi",
        int,
        "cap on images' displayed resolution, 10-2400 dpi, lossy levels (0: the level's)",
        minimum=10,
        maximum=2400,
        reason="INVALID_MAX_IMAGE_DPI",
        unset_means="the level's",
        metavar="DPI",
    ),
    Option("grayscale", bool, "convert colour to gray", default=False),
    Option("remove_metadata", bool, "drop document metadata (Info dictionary, XMP)", default=False),
    Option("linearize", bool, "linearize the result for fast web view", default=False),
    Option(
        "target_size_bytes",
        int,
        "aim for at most this size (500000, 800K, 1.5M): lower quality is tried until the result fits (0: none)",
        minimum=1,
        reason="INVALID_TARGET_SIZE",
        parse=parse_size,
        metavar="SIZE",
    ),
    Option(
        "allow_signature_break",
        bool,
        "compress a digitally signed PDF even though that invalidates its signature",
        default=False,
    ),
)
OPTION_NAMES: tuple[str, ...] = tuple(option.name for option in OPTIONS)


def _invalid(reason: str, message: str) -> InvalidArgument:
    from libs.errors import InvalidArgument  # grpc: not for the stdlib-only readers, see the docstring

    return InvalidArgument(reason, message)


# --- levels ---------------------------------------------------------------


def level_number(name: str) -> int:
    """The CompressionLevel value of a level name; InvalidArgument INVALID_LEVEL for an unknown name."""
    level = _LEVEL_BY_NAME.get(name)
    if level is None:
        raise _invalid(INVALID_LEVEL, LEVEL_MESSAGE)
    return level.number


def level_name(number: int) -> str:
    """The name of a CompressionLevel value; UNSPECIFIED (0) and values this build does not know read as the default."""
    level = _LEVEL_BY_NUMBER.get(number)
    return level.name if level is not None else DEFAULT_LEVEL


# --- values -----------------------------------------------------------------


def validate(values: Mapping[str, Any]) -> None:
    """Raise InvalidArgument with the reason code of the first value out of range (the level first)."""
    if values.get("level", DEFAULT_LEVEL) not in _LEVEL_BY_NAME:
        raise _invalid(INVALID_LEVEL, LEVEL_MESSAGE)
    for option in OPTIONS:
        if not option.allows(values.get(option.name, option.unset)):
            raise _invalid(option.reason, option.error_message)


def public_values(request: public.CreateJobRequest) -> dict[str, Any]:
    """The values of a public upload, whose level is a name in any case (empty: the default)."""
    level = (request.level or DEFAULT_LEVEL).strip().lower()
    return {"level": level, **{option.name: getattr(request, option.name) for option in OPTIONS}}


def values_of(options: jobs.CompressionOptions) -> dict[str, Any]:
    """The values of a jobs.v1 CompressionOptions: also the public Job's fields."""
    return {"level": level_name(options.level), **{option.name: getattr(options, option.name) for option in OPTIONS}}


def checked_values(options: jobs.CompressionOptions) -> dict[str, Any]:
    """The values of a CompressionOptions from another service, validated (an unknown level number included)."""
    if options.level and options.level not in _LEVEL_BY_NUMBER:
        raise _invalid(INVALID_LEVEL, LEVEL_MESSAGE)
    values = values_of(options)
    validate(values)
    return values


def to_message(values: Mapping[str, Any]) -> jobs.CompressionOptions:
    """A jobs.v1 CompressionOptions from valid values."""
    from pdfsmaller.jobs.v1 import jobs_service_pb2  # protobuf: not for the stdlib-only readers

    fields = {option.name: values.get(option.name, option.unset) for option in OPTIONS}
    return jobs_service_pb2.CompressionOptions(level=level_number(values["level"]), **fields)  # type: ignore[arg-type]


def options_from_public(request: public.CreateJobRequest) -> jobs.CompressionOptions:
    """The job's CompressionOptions from a public upload's fields, validated."""
    values = public_values(request)
    validate(values)
    return to_message(values)


def engine_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's CompressOptions keyword arguments: an option not set becomes the engine's default (None)."""
    kwargs: dict[str, Any] = {"level": values.get("level", DEFAULT_LEVEL)}
    for option in OPTIONS:
        value = values.get(option.name, option.unset)
        kwargs[option.name] = option.default if value == option.unset else value
    return kwargs


# --- command-line flags -----------------------------------------------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """`--level` and one flag per option; `flag_values` reads them back as values."""
    levels = "; ".join(f"{level.name}: {level.help}" for level in LEVELS)
    parser.add_argument(
        "--level", choices=LEVEL_NAMES, default=DEFAULT_LEVEL, help=f"{levels} (default: {DEFAULT_LEVEL})"
    )
    for option in OPTIONS:
        flag = f"--{option.name.replace('_', '-')}"  # --target-size, as abbreviated, too
        if option.ranged:
            parser.add_argument(
                flag,
                dest=option.name,
                type=option.parse,
                default=option.unset,
                metavar=option.metavar,
                help=option.help,
            )
        else:
            parser.add_argument(flag, dest=option.name, action="store_true", help=option.help)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    return {"level": args.level, **{option.name: getattr(args, option.name) for option in OPTIONS}}
