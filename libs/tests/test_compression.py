"""The compression options' definition, and the protos and the engine checked against it."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

from libs import compression
from libs.errors import InvalidArgument
from services.compressor.engine import EngineError
from services.compressor.engine import options as engine_options

ROOT = Path(__file__).resolve().parents[2]
# The engine's options that are not the API's: a password only ever reaches a local run.
ENGINE_ONLY = {"password"}
_PROTO_TYPES = {int: {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64}, bool: {FieldDescriptor.TYPE_BOOL}}
_INT32_MAX = 2**31 - 1


def _field(message: Descriptor, name: str) -> FieldDescriptor:
    assert name in message.fields_by_name, f"{message.full_name} has no field {name}"
    return message.fields_by_name[name]


# --- the protos and the engine agree with the definition ------------------------------------------


@pytest.mark.parametrize(
    "message", [jobs.CompressionOptions.DESCRIPTOR, public.CreateJobRequest.DESCRIPTOR, public.Job.DESCRIPTOR]
)
@pytest.mark.parametrize("option", compression.OPTIONS, ids=compression.OPTION_NAMES)
def test_every_option_is_a_field_of_the_protos_with_its_type(message: Descriptor, option: compression.Option) -> None:
    field = _field(message, option.name)
    assert field.type in _PROTO_TYPES[option.type], f"{message.full_name}.{option.name} is not a {option.type}"
    assert not field.is_repeated
    if field.type == FieldDescriptor.TYPE_INT32 and option.ranged:
        assert option.maximum is not None
        assert option.maximum <= _INT32_MAX


def test_the_level_is_the_enum_internally_and_a_name_in_the_public_api() -> None:
    assert _field(jobs.CompressionOptions.DESCRIPTOR, "level").enum_type is jobs.CompressionLevel.DESCRIPTOR
    for message in (public.CreateJobRequest.DESCRIPTOR, public.Job.DESCRIPTOR):
        assert _field(message, "level").type == FieldDescriptor.TYPE_STRING


def test_every_field_of_the_jobs_options_is_defined() -> None:
    assert list(jobs.CompressionOptions.DESCRIPTOR.fields_by_name) == ["level", *compression.OPTION_NAMES]


def test_the_levels_are_the_enums_values_but_unspecified() -> None:
    values = {value.name: value.number for value in jobs.CompressionLevel.DESCRIPTOR.values}
    assert values.pop("COMPRESSION_LEVEL_UNSPECIFIED") == 0
    assert values == {f"COMPRESSION_LEVEL_{level.name.upper()}": level.number for level in compression.LEVELS}
    assert compression.DEFAULT_LEVEL in compression.LEVEL_NAMES


def test_the_engine_takes_the_same_options_with_the_same_defaults() -> None:
    fields = {field.name: field.default for field in dataclasses.fields(engine_options.CompressOptions)}
    assert set(fields) == {"level", *compression.OPTION_NAMES, *ENGINE_ONLY}
    assert fields["level"] == compression.DEFAULT_LEVEL
    assert {option.name: fields[option.name] for option in compression.OPTIONS} == {
        option.name: option.default for option in compression.OPTIONS
    }


def test_the_engine_has_a_profile_for_each_level_in_order() -> None:
    assert tuple(engine_options.LEVELS) == compression.LEVEL_NAMES
    assert all(profile.name == name for name, profile in engine_options.LEVELS.items())


@pytest.mark.parametrize(
    ("option", "value"),
    [("image_quality", 0), ("image_quality", 101), ("max_image_dpi", 9.5), ("target_size_bytes", 0)],
)
def test_the_engine_refuses_what_the_definition_does(option: str, value: float) -> None:
    with pytest.raises(EngineError, match=option) as caught:
        engine_options.CompressOptions(**{option: value}).validate()
    assert caught.value.reason == "INVALID_OPTIONS"
    engine_options.CompressOptions(**{option: None}).validate()


# --- validation: the reason codes and messages the API has always returned ---------------------------


@pytest.mark.parametrize(
    ("values", "reason", "message"),
    [
        ({"level": "ultra"}, "INVALID_LEVEL", "level must be one of lossless, low, medium, high, maximum"),
        ({"image_quality": 101}, "INVALID_IMAGE_QUALITY", "image_quality must be 1-100 (0 for the level's default)"),
        ({"image_quality": -1}, "INVALID_IMAGE_QUALITY", "image_quality must be 1-100 (0 for the level's default)"),
        ({"max_image_dpi": 9}, "INVALID_MAX_IMAGE_DPI", "max_image_dpi must be 10-2400 (0 for the level's)"),
        ({"max_image_dpi": 2401}, "INVALID_MAX_IMAGE_DPI", "max_image_dpi must be 10-2400 (0 for the level's)"),
        ({"max_image_dpi": -10}, "INVALID_MAX_IMAGE_DPI", "max_image_dpi must be 10-2400 (0 for the level's)"),
        ({"target_size_bytes": -1}, "INVALID_TARGET_SIZE", "target_size_bytes must not be negative"),
    ],
)
def test_a_value_out_of_range_is_refused_with_its_reason(values: dict[str, Any], reason: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        compression.validate({"level": "medium", **values})
    assert (caught.value.reason, caught.value.message) == (reason, message)


@pytest.mark.parametrize(
    "values",
    [
        {"image_quality": 0},
        {"image_quality": 1},
        {"image_quality": 100},
        {"max_image_dpi": 0},
        {"max_image_dpi": 10},
        {"max_image_dpi": 2400},
        {"target_size_bytes": 0},
        {"target_size_bytes": 2**62},
        {"grayscale": True, "linearize": True},
    ],
)
def test_values_in_range_or_not_set_pass(values: dict[str, Any]) -> None:
    for level in compression.LEVEL_NAMES:
        compression.validate({"level": level, **values})


def test_a_level_number_this_build_does_not_know_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compression.checked_values(jobs.CompressionOptions(level=99))  # type: ignore[arg-type]
    assert caught.value.reason == "INVALID_LEVEL"
    with pytest.raises(InvalidArgument):
        compression.checked_values(jobs.CompressionOptions(image_quality=101))
    assert compression.checked_values(jobs.CompressionOptions())["level"] == compression.DEFAULT_LEVEL


# --- conversions -------------------------------------------------------------------------------------


def test_level_names_and_numbers_map_both_ways() -> None:
    for level in compression.LEVELS:
        assert compression.level_name(compression.level_number(level.name)) == level.name
    assert compression.level_name(jobs.COMPRESSION_LEVEL_UNSPECIFIED) == compression.DEFAULT_LEVEL
    assert compression.level_number("high") == jobs.COMPRESSION_LEVEL_HIGH
    with pytest.raises(InvalidArgument):
        compression.level_number("MEDIUM")  # one spelling: the name


def test_public_fields_round_trip_through_the_jobs_options() -> None:
    request = public.CreateJobRequest(
        level=" High ",
        image_quality=40,
        max_image_dpi=150,
        grayscale=True,
        remove_metadata=True,
        linearize=True,
        target_size_bytes=123_456,
        allow_signature_break=True,
    )
    options = compression.options_from_public(request)
    assert options.level == jobs.COMPRESSION_LEVEL_HIGH
    values = compression.values_of(options)
    assert values == compression.public_values(request)
    assert all(values[name] for name in compression.OPTION_NAMES)  # every field carried, none left at its default
    job = public.Job(**values)
    assert compression.options_from_public(public.CreateJobRequest(**values)) == options
    assert job.level == "high"
    assert compression.options_from_public(public.CreateJobRequest()).level == jobs.COMPRESSION_LEVEL_MEDIUM


def test_engine_kwargs_leave_what_is_not_set_to_the_engine() -> None:
    unset = compression.engine_kwargs(compression.values_of(jobs.CompressionOptions()))
    assert unset == {
        "level": "medium",
        "image_quality": None,
        "max_image_dpi": None,
        "grayscale": False,
        "remove_metadata": False,
        "linearize": False,
        "target_size_bytes": None,
        "allow_signature_break": False,
    }
    engine_options.CompressOptions(**unset).validate()
    chosen = compression.engine_kwargs(compression.values_of(jobs.CompressionOptions(level=4, image_quality=30)))
    assert (chosen["level"], chosen["image_quality"]) == ("high", 30)


# --- flags -----------------------------------------------------------------------------------------------


def _parse(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    compression.add_flags(parser)
    return compression.flag_values(parser.parse_args(argv))


def test_flags_default_to_not_set_and_read_as_values() -> None:
    assert _parse() == {"level": "medium", **{option.name: option.unset for option in compression.OPTIONS}}
    parsed = _parse("--level", "high", "--image-quality", "50", "--target-size", "1.5M", "--grayscale")
    assert parsed["level"] == "high"
    assert (parsed["image_quality"], parsed["target_size_bytes"], parsed["grayscale"]) == (50, 1536 * 1024, True)
    assert _parse("--target-size-bytes", "800k", "--max-image-dpi", "150")["target_size_bytes"] == 800 * 1024
    for option in compression.OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        assert _parse(*([flag] if not option.ranged else [flag, "42"]))[option.name] != option.unset, flag


def test_flags_refuse_unknown_levels_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--level", "MEDIUM"], ["--target-size", "lots"], ["--target-size", "9" * 40]):
        with pytest.raises(SystemExit):
            _parse(*argv)
    assert "not a size" in capsys.readouterr().err


def test_loading_the_definition_needs_only_the_standard_library() -> None:
    # The stdlib-only client CLI and the engine's child process import it.
    probe = "import sys, libs.compression; print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'google'}))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
