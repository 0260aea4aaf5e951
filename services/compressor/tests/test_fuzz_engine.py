"""The engine's handling of untrusted bytes under coverage-guided fuzzing (a short run; docs/engine.md has the
long one), the saved findings replayed, and one test per class of finding fixed."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import pikepdf
import pytest
from pikepdf import Array, Dictionary, Name

from libs.tests.short_fuzz import run_short_fuzz
from services.compressor.engine.errors import TOO_COMPLEX, EngineError
from services.compressor.engine.options import Limits
from services.compressor.engine.placements import find_placements
from services.compressor.engine.safety import check_bombs, is_signed
from services.compressor.fuzz_engine import Harness, write_seeds

from . import builders

# Every input the fuzzer once broke the engine with: each must now end in a result or a known EngineError.
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
FUZZ_SECONDS = 15  # plus ~10 s of start-up and seed replay: about the suite budget for new tests


@pytest.mark.parametrize("finding", sorted(REGRESSIONS.iterdir()), ids=lambda path: path.name)
def test_saved_fuzz_findings_end_in_a_result_or_a_known_error(tmp_path: Path, finding: Path) -> None:
    Harness(tmp_path).test_one_input(finding.read_bytes())


@pytest.mark.timeout(FUZZ_SECONDS + 150)
def test_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = write_seeds(corpus)
    runs = run_short_fuzz("services.compressor.fuzz_engine", corpus, seeds, tmp_path / "findings", FUZZ_SECONDS)
    print(f"engine fuzz: {runs} runs in {FUZZ_SECONDS} s, 0 findings")


# -- the classes of finding, each built here ----------------------------------------------------------------


def _image(pdf: pikepdf.Pdf) -> pikepdf.Stream:
    img = pdf.make_indirect(pikepdf.Stream(pdf, bytes(12)))
    img.stream_dict.update({"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": 2, "/Height": 2})
    img.stream_dict.update({"/BitsPerComponent": 8, "/ColorSpace": Name.DeviceRGB})
    return img


def _page_drawing(pdf: pikepdf.Pdf, xobjects: Dictionary, content: bytes) -> pikepdf.Page:
    page = pdf.add_blank_page(page_size=(100, 100))
    page.obj.Resources = Dictionary(XObject=xobjects)
    page.obj.Contents = pdf.make_stream(content)
    return page


def test_placements_ignore_entries_that_are_not_usable_numbers() -> None:
    """A /Width, /UserUnit or cm operand that is a name, or an integer too large for a float, raised TypeError or
    OverflowError: the image's placement is unknown instead (never resampled)."""
    pdf = pikepdf.new()
    img = _image(pdf)
    img.stream_dict.Width = Name.Wide
    huge = b"9" * 400
    _page_drawing(pdf, Dictionary(Im0=img), b"q 50 0 0 50 0 0 cm /Im0 Do Q")
    _page_drawing(pdf, Dictionary(Im0=img), b"q %s 0 0 50 0 0 cm /Im0 Do Q" % huge).obj.UserUnit = Name.Big
    placement = find_placements(pdf)[img.objgen]
    assert placement.pages == {0, 1}
    assert placement.effective_dpi is None


def test_placements_find_an_image_drawn_by_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """`str()` of a Name that is not UTF-8 raised UnicodeDecodeError (found by the fuzzer)."""
    pdf = pikepdf.new()
    img = _image(pdf)
    _page_drawing(pdf, Dictionary({"/ImZZ": img}), b"q 72 0 0 72 0 0 cm /ImZZ Do Q")
    pdf.save(tmp_path / "in.pdf", compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    data = (tmp_path / "in.pdf").read_bytes()
    (tmp_path / "in.pdf").write_bytes(data.replace(b"/ImZZ", b"/Im\x85\x86"))  # same length: offsets hold
    with pikepdf.open(tmp_path / "in.pdf") as damaged:
        found = find_placements(damaged)
    assert [p.effective_dpi for p in found.values()] == [2.0]


@pytest.mark.timeout(30)
def test_placements_of_forms_drawing_forms_many_times_end_quickly() -> None:
    """Forms without their own /Resources were walked again at every use: twelve of them, each drawing the next
    twenty times, never finished. Now each is walked once per resources it is drawn with, and past the budget
    every placement is unknown."""
    pdf = pikepdf.new()
    xobjects = Dictionary(Im0=_image(pdf))
    drawn = "Im0"
    for level in range(12):
        form = pdf.make_stream((f"/{drawn} Do " * 20).encode())
        form.stream_dict.update({"/Type": Name.XObject, "/Subtype": Name.Form, "/BBox": Array([0, 0, 1, 1])})
        drawn = f"F{level}"
        xobjects[f"/{drawn}"] = form
    _page_drawing(pdf, xobjects, f"/{drawn} Do".encode())
    assert all(p.effective_dpi is None for p in find_placements(pdf).values())


def test_a_form_without_resources_draws_what_each_page_names() -> None:
    """The walk of a form that inherits its resources is reused only where it is drawn with the same resources."""
    pdf = pikepdf.new()
    shared = pdf.make_stream(b"q 36 0 0 36 0 0 cm /Im Do Q")
    shared.stream_dict.update({"/Type": Name.XObject, "/Subtype": Name.Form, "/BBox": Array([0, 0, 100, 100])})
    first, second = _image(pdf), _image(pdf)
    _page_drawing(pdf, Dictionary(Im=first, Form=shared), b"/Form Do")
    _page_drawing(pdf, Dictionary(Im=second, Form=shared), b"q 2 0 0 2 0 0 cm /Form Do Q")
    found = find_placements(pdf)
    assert (found[first.objgen].pages, found[first.objgen].effective_dpi) == ({0}, 4.0)
    assert (found[second.objgen].pages, found[second.objgen].effective_dpi) == ({1}, 2.0)


def test_fields_entry_that_is_not_an_array_lists_no_field(tmp_path: Path) -> None:
    """`/AcroForm /Fields 5` raised TypeError in the signature check, outside the damage contract: a failed job."""
    src = builders.signed_pdf(tmp_path / "signed.pdf")
    with pikepdf.open(src) as pdf:
        pdf.Root.AcroForm.Fields = 5
        assert is_signed(pdf) is False


def _lzw_zeros(count: int) -> bytes:
    """PDF LZW (EarlyChange 1) of ``count`` zero bytes, as an encoder writes it: each code one zero longer than the
    last (the most LZW can expand), a clear code whenever the table fills."""
    out, acc, nbits = bytearray(), 0, 0

    def emit(code: int, width: int) -> None:
        nonlocal acc, nbits
        acc, nbits = (acc << width) | code, nbits + width
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1

    next_code, width, longest = 258, 9, 1
    emit(256, width)
    while count > 0:
        run = min(longest, count)
        emit(0 if run == 1 else 256 + run, width)  # the table holds a run of n zeros as code 256 + n
        count -= run
        next_code, longest = next_code + 1, longest + 1
        if next_code + 1 > 1 << width and width < 12:
            width += 1
        if next_code >= 4094:
            emit(256, width)
            next_code, width, longest = 258, 9, 1
    emit(257, width)
    if nbits:
        out.append((acc << (8 - nbits)) & 0xFF)
    return bytes(out)


def _with_encoded_stream(path: Path, raw: bytes, filters: list[Name]) -> Path:
    builders.text_pdf(path, pages=1)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        stream = pikepdf.Stream(pdf, b"")
        stream.write(raw, filter=Array(filters))  # already encoded
        pdf.Root.Junk = pdf.make_indirect(stream)
        # As built: with compress_streams, qpdf would decode ASCII and LZW layers and re-flate the stream.
        pdf.save(path, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    return path


_DECODED = 1 << 20
_BOMBS = {
    "lzw": (lambda: _lzw_zeros(_DECODED), [Name.LZWDecode]),
    "run-length": (lambda: bytes([129, 0]) * (_DECODED // 128) + b"\x80", [Name.RunLengthDecode]),
    "flate-behind-ascii-hex": (lambda: zlib.compress(bytes(_DECODED), 9).hex().encode() + b">", [Name.AHx, Name.Fl]),
    "flate-behind-ascii85": (
        lambda: base64.a85encode(zlib.compress(bytes(_DECODED), 9)) + b"~>",
        [Name.ASCII85Decode, Name.FlateDecode],
    ),
    "lzw-behind-flate": (lambda: zlib.compress(_lzw_zeros(_DECODED)), [Name.FlateDecode, Name.LZWDecode]),
}


@pytest.mark.parametrize("kind", list(_BOMBS))
def test_bomb_cap_applies_to_every_expanding_filter_and_chain(tmp_path: Path, kind: str) -> None:
    """Only streams whose first filter was Flate were measured: LZW (up to ~3,600x), RunLength, or Flate behind an
    ASCII filter decoded past the cap unchecked."""
    build, filters = _BOMBS[kind]
    raw = build()
    with pikepdf.open(_with_encoded_stream(tmp_path / "bomb.pdf", raw, filters)) as pdf:
        stored = pdf.Root.Junk.stream_dict.Filter
        assert (list(stored) if isinstance(stored, Array) else [stored]) == filters
        decoded = pdf.Root.Junk.read_bytes(decode_level=pikepdf.StreamDecodeLevel.specialized)
        assert decoded == bytes(_DECODED)  # what qpdf decodes it to (RunLength: with images' decode level)
        check_bombs(pdf, Limits(max_decoded_stream_bytes=_DECODED + 1))  # at the cap: fine
        with pytest.raises(EngineError) as err:
            check_bombs(pdf, Limits(max_decoded_stream_bytes=_DECODED // 4))
    assert err.value.reason == TOO_COMPLEX
