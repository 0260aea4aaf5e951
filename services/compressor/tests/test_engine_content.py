"""Content-stream rewriting (engine/content.py) and where the structural candidate applies it (structural.py)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from pikepdf import Array, Dictionary, Name

from services.compressor.engine import content, structural


def _rewrite(data: bytes, *, merge_text: bool = True, precision: content.Precision | None = None) -> bytes | None:
    return content.rewrite_data(
        data, merge_text=merge_text, precision=precision, max_instructions=10_000, stats=content.RewriteStats()
    )


def _ops(data: bytes) -> list[str]:
    return [i.operator for i in content.instructions_of(content.tokenize(data), 10_000)]


@pytest.mark.parametrize(
    ("token", "shortest"),
    [
        (b"0.500", b".5"),
        (b"-0.0", b"0"),
        (b"-0.250", b"-.25"),
        (b"+007", b"7"),
        (b"10.10", b"10.1"),
        (b"3.", b"3"),
        (b"0", b"0"),
        (b"-.5", b"-.5"),
        (b"12345678901", b"12345678901"),  # beyond 32 bits: as written
    ],
)
def test_numbers_take_their_shortest_form(token: bytes, shortest: bytes) -> None:
    assert content.canonical_number(token) == shortest


def test_only_the_white_space_that_separates_tokens_is_kept() -> None:
    data = b"q  1.000 0 0 1.000 0.500 0 cm\n/F1 12 Tf [ (a) -250.0 (b) ] TJ 0 0 m 10 10 l S Q"
    assert _rewrite(data) == b"q\n1 0 0 1 .5 0 cm/F1 12 Tf[(a)-250(b)]TJ\n0 0 m\n10 10 l\nS\nQ"


def test_values_already_in_force_are_dropped_and_others_kept() -> None:
    data = (
        b"2 w 2.0 w 0 0 1 RG 0 0 1 RG 0 0 m 1 1 l S "  # repeats of width and stroke colour
        b"q 3 w 0 0 m S Q 2 w 0 0 m S "  # Q restores 2: the second 2 w changes nothing
        b"/CS0 cs .5 sc /CS0 cs 0 0 m f "  # a new cs resets the colour: kept
        b"1 2 (x) \" 1 Tw 2 Tc 0 -12 TD 12 TL (y) ' "  # " sets Tw and Tc, TD sets the leading
        b"1 0 0 1 0 0 cm /GS1 gs /GS1 gs 0 0 m S"
    )
    out = _rewrite(data)
    assert out is not None
    expected = "w RG m l S q w m S Q m S cs sc cs m f \" TD ' gs m S"
    assert _ops(out) == expected.split(" ")


def test_empty_q_pairs_and_state_set_before_q_or_the_end_are_dropped() -> None:
    out = _rewrite(b"0 0 m 1 1 l S q 0.5 g 2 w Q q 3 w 0 0 m S 1 0 0 RG Q 1 0 0 rg")
    assert out == b"0 0 m\n1 1 l\nS\nq\n3 w\n0 0 m\nS\nQ"


def test_text_objects_merge_only_when_the_second_sets_its_matrix() -> None:
    merged = _rewrite(b"BT /F1 9 Tf 1 0 0 1 10 700 Tm (a) Tj ET BT 0 g 1 0 0 1 10 690 Tm (b) Tj ET")
    assert merged is not None
    assert _ops(merged) == ["BT", "Tf", "Tm", "Tj", "g", "Tm", "Tj", "ET"]
    relative = b"BT /F1 9 Tf 10 700 Td (a) Tj ET BT 10 690 Td (b) Tj ET"
    assert _ops(_rewrite(relative) or b"").count("BT") == 2  # Td after BT is relative to the identity
    clipping = b"7 Tr BT 1 0 0 1 1 1 Tm (a) Tj ET BT 1 0 0 1 1 9 Tm (b) Tj ET"
    assert _ops(_rewrite(clipping) or b"").count("BT") == 2  # ET clips to the text shown so far
    assert _ops(_rewrite(merged, merge_text=False) or b"").count("BT") == 1


def test_inline_images_are_copied_byte_for_byte() -> None:
    image = b"BI /W 4 /H 1 /BPC 8 /CS /G ID \x00()\xff EI"
    flate = b"BI /W 2 /H 2 /BPC 8 /CS /G /F /Fl ID " + zlib.compress(b"EI\x00\x01") + b"\nEI"
    out = _rewrite(b"q 1.000 0 0 1.000 0 0 cm " + image + b" Q q 2 0 0 2 0 0 cm " + flate + b" Q")
    assert out is not None
    assert image in out
    assert flate in out


@pytest.mark.parametrize(
    "data",
    [
        b"q BI /W 4 /H 1 /BPC 8 /CS /G ID \x00 EI\x01\x02 EI Q",  # an EI inside the data: where it ends is unsure
        b"BI /W 2 /H 2 /BPC 8 /CS /G /F /DCT ID \xff\xd8 EI",  # a filter whose end is not known here
        b"1 0 0 RG ) 0 0 m",  # a stray delimiter
        b"1.2.3 w",  # a malformed number
        b"0 0 m 1 1",  # operands without an operator
        b"[ 1 S ] TJ",  # an operator inside an array
        b"(unterminated Tj",
    ],
)
def test_what_other_readers_might_read_differently_is_left_alone(data: bytes) -> None:
    assert _rewrite(data) is None


def test_lossy_rounding_follows_the_current_transformation() -> None:
    precision = content.Precision(structural.LOSSY_CONTENT_TOLERANCE_PT)
    data = b"100.123456 200.987654 m q 10 0 0 10 0 0 cm 1.1234567 2.2345678 l Q q .1 0 0 .1 0 0 cm 3.123 4.567 l Q"
    out = _rewrite(data, precision=precision)
    # Identity: 3 decimals; scaled up 10x: one more; scaled down 10x: one fewer. cm itself stays exact.
    assert out == b"100.123 200.988 m\nq\n10 0 0 10 0 0 cm\n1.1235 2.2346 l\nQ\nq\n.1 0 0 .1 0 0 cm\n3.12 4.57 l\nQ"
    text = b"BT /F1 12.123456 Tf 1 0 0 1 72.123456 700 Tm [(a) -33.333333 (b)] TJ ET"
    assert _rewrite(text, precision=precision) == _rewrite(text)  # text is not rounded


# --- the document-level rewrite ---------------------------------------------------------------------------------


def _render(path: Path) -> list[np.ndarray]:
    doc = pdfium.PdfDocument(str(path))
    try:
        return [np.asarray(doc[i].render(scale=150 / 72).to_pil()) for i in range(len(doc))]
    finally:
        doc.close()


def _drawing_pdf(path: Path, *, shared_piece: bool = False) -> Path:
    """Two pages: one with its content split into an array (text lines, strokes with redundant state, an inline
    image), one drawing a form XObject; optionally a piece both pages' arrays share."""
    pdf = pikepdf.new()
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    lines = b"".join(
        b"BT /F1 11.000 Tf 0.000 0.000 0.000 rg 1.000 0 0 1.000 72.000 %.3f Tm (Line %d) Tj ET\n" % (700 - 14 * i, i)
        for i in range(20)
    )
    strokes = b"".join(
        b"q 0.500000 w 1 J 1.000000 0.000000 0.000000 RG %.6f 100.000000 m %.6f 300.000000 l S Q\n"
        % (100 + 3.14159265 * i, 120 + 3.14159265 * i)
        for i in range(60)
    )
    inline = b"q 20 0 0 20 400 400 cm BI /W 4 /H 1 /BPC 8 /CS /G ID \x10\x80\xc0\xff EI Q\n"
    form = pdf.make_stream(b"q 1.000 w 0 0 1 RG 0 0 m 50.000 50.000 l S Q", Type=Name.XObject, Subtype=Name.Form)
    form.BBox = Array([0, 0, 60, 60])
    pieces = [pdf.make_stream(lines), pdf.make_stream(strokes), pdf.make_stream(inline)]
    for index in range(2):
        pdf.add_blank_page(page_size=(595, 842))
        page = pdf.pages[index].obj
        page.Resources = Dictionary(Font=Dictionary(F1=font), XObject=Dictionary(Fm1=form))
        if index == 0:
            page.Contents = Array(pieces)
        else:
            own = pdf.make_stream(b"q 2 0 0 2 100 100 cm /Fm1 Do Q")
            page.Contents = Array([own, pieces[1]]) if shared_piece else own
    pdf.save(path)
    return path


def _rewritten(source: Path, dest: Path, *, lossy: bool, limits: structural.ContentLimits | None = None):
    with pikepdf.open(source) as pdf:
        result = structural.rewrite_content_streams(pdf, lossy=lossy, limits=limits)
        structural.save(pdf, dest)
    return result


def test_document_rewrite_is_smaller_and_renders_identically(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf")
    plain, out = tmp_path / "plain.pdf", tmp_path / "out.pdf"
    with pikepdf.open(source) as pdf:
        structural.save(pdf, plain)
    result = _rewritten(source, out, lossy=False)
    assert result.pages_joined == 1
    assert result.streams_rewritten == 3  # page 1 (joined), page 2, the form
    assert result.stats.text_objects_merged == 19
    assert result.saved > 0
    assert out.stat().st_size < plain.stat().st_size
    with pikepdf.open(out) as pdf:
        assert isinstance(pdf.pages[0].obj.Contents, pikepdf.Stream)
        assert b"ID \x10\x80\xc0\xff EI" in pdf.pages[0].obj.Contents.read_bytes()
    for before, after in zip(_render(source), _render(out), strict=True):
        assert np.array_equal(before, after)
    with pikepdf.open(out) as pdf:
        for page in pdf.pages:
            pikepdf.parse_content_stream(page)  # qpdf reads it too, without a warning
        assert not pdf.get_warnings()
    again = tmp_path / "again.pdf"
    _rewritten(source, again, lossy=False)
    assert again.read_bytes() == out.read_bytes()  # deterministic


def test_lossy_rewrite_rounds_coordinates_invisibly(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf")
    lossless, lossy = tmp_path / "lossless.pdf", tmp_path / "lossy.pdf"
    _rewritten(source, lossless, lossy=False)
    result = _rewritten(source, lossy, lossy=True)
    assert result.stats.numbers_rounded > 0
    assert lossy.stat().st_size < lossless.stat().st_size
    for before, after in zip(_render(source), _render(lossy), strict=True):
        assert np.abs(before.astype(int) - after.astype(int)).max() <= 8


def test_a_piece_shared_between_pages_keeps_both_arrays(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf", shared_piece=True)
    result = _rewritten(source, tmp_path / "out.pdf", lossy=False)
    assert result.pages_joined == 0
    with pikepdf.open(tmp_path / "out.pdf") as pdf:
        assert all(isinstance(p.obj.Contents, Array) for p in pdf.pages)


def test_streams_above_the_caps_are_left_as_they_are(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf")
    limits = structural.ContentLimits(max_instructions=2)
    result = _rewritten(source, tmp_path / "out.pdf", lossy=False, limits=limits)
    # Page 1's array is still joined (that needs no parsing); page 2 and the form stay as they are.
    assert (result.streams_rewritten, result.streams_left, result.pages_joined) == (0, 2, 1)
    with pikepdf.open(source) as a, pikepdf.open(tmp_path / "out.pdf") as b:
        assert a.pages[1].obj.Contents.read_bytes() == b.pages[1].obj.Contents.read_bytes()


def test_a_page_stream_that_is_also_a_piece_elsewhere_is_left_alone(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf")
    with pikepdf.open(source, allow_overwriting_input=True) as pdf:
        strokes = pdf.pages[0].obj.Contents[1]
        pdf.pages[1].obj.Contents = strokes  # page 2 draws only the piece page 1 draws second
        before = strokes.read_bytes()
        pdf.save(source)
    result = _rewritten(source, tmp_path / "out.pdf", lossy=False)
    assert result.pages_joined == 0
    with pikepdf.open(tmp_path / "out.pdf") as pdf:
        assert pdf.pages[1].obj.Contents.read_bytes() == before


def test_an_inline_image_ends_only_where_its_data_ends() -> None:
    # 6 bytes of data with " EI " inside them: a reader searching for EI stops early, one counting bytes does not.
    with pytest.raises(content.Unsupported):
        content.tokenize(b"q BI /W 6 /H 1 /BPC 8 /CS /G ID \x00 EI \x02 EI Q")
    tokens = content.tokenize(b"q BI /W 4 /H 1 /BPC 8 /CS /G ID \x00\x01\x02\x03\nEI Q")
    assert tokens == [b"q", b"BI /W 4 /H 1 /BPC 8 /CS /G ID \x00\x01\x02\x03\nEI", b"Q"]


def test_a_one_piece_array_is_the_whole_content(tmp_path: Path) -> None:
    source = _drawing_pdf(tmp_path / "in.pdf")
    with pikepdf.open(source, allow_overwriting_input=True) as pdf:
        pdf.pages[1].obj.Contents = Array([pdf.pages[1].obj.Contents])
        pdf.save(source)
    result = _rewritten(source, tmp_path / "out.pdf", lossy=False)
    assert result.streams_rewritten == 3


_SHORTEST = b"0 0 m 100 100 l S"
_WORDY = b"q 1.000000 0.000000 0.000000 1.000000 0.000000 0.000000 cm 0.000 0.000 m 100.000 100.000 l S Q\n" * 40


def _pages_pdf(contents: list[bytes]) -> pikepdf.Pdf:
    pdf = pikepdf.new()
    for data in contents:
        page = pdf.add_blank_page(page_size=(595, 842))
        page.obj.Contents = pdf.make_stream(data)
    return pdf


def test_a_document_whose_sample_saves_little_is_left_after_the_sample() -> None:
    # Forty pages; the one-in-five sample (pages 1, 6, 11, ...) is in its shortest form already, the rest is not.
    contents = [_SHORTEST if i % 5 == 0 else _WORDY for i in range(40)]
    with _pages_pdf(contents) as pdf:
        gated = structural.rewrite_content_streams(pdf, lossy=False, document_bytes=100_000)
    assert gated.streams_rewritten == 0
    assert gated.streams_left == 40  # eight tried, thirty-two never parsed
    with _pages_pdf(contents) as pdf:
        assert structural.rewrite_content_streams(pdf, lossy=False).streams_rewritten == 32  # no file size: no gate


def test_a_document_whose_sample_pays_is_rewritten_whole() -> None:
    with _pages_pdf([_WORDY] * 40) as pdf:
        result = structural.rewrite_content_streams(pdf, lossy=False, document_bytes=100_000)
    assert result.streams_rewritten == 40
