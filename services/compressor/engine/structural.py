"""Structural techniques: deduplication, private-data and metadata removal, the final qpdf rewrite.

Everything here is lossless for what a reader displays: identical objects are merged, objects nothing
references are not written, streams are re-deflated at the best zlib level and packed into object streams.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from . import codecs, content
from .inflate import RAW_DEFLATE, ZLIB, inflate_prefix
from .report import TechniqueSaving

# Non-stream objects that are safe to merge when identical: they carry no identity of their own (unlike pages,
# annotations or form fields, whose identity matters to /Parent links and to viewers).
_MERGEABLE_TYPES = (Name.FontDescriptor, Name.Font, Name.ExtGState, Name.Pattern)


@dataclass
class DedupResult:
    objects_merged: int = 0
    bytes_saved: int = 0  # raw stream bytes no longer written


def _stream_key(obj: Stream) -> bytes:
    # Same raw bytes imply the same /Length, so the whole dictionary can be part of the key.
    raw = obj.read_raw_bytes()
    return hashlib.sha256(raw).digest() + obj.stream_dict.unparse(resolved=True)


def _dict_key(obj: Dictionary) -> bytes:
    return obj.unparse(resolved=True)


def _replace_refs(pdf: pikepdf.Pdf, mapping: dict[tuple[int, int], pikepdf.Object]) -> None:
    """Point every reference to a merged object at its survivor (one pass over every container)."""

    def visit(container: pikepdf.Object) -> None:
        stack = [container]
        while stack:
            c = stack.pop()
            # Arrays by index, dictionaries (or a stream's dictionary) by key.
            slots: list[int] | list[str] = list(range(len(c))) if isinstance(c, Array) else list(c.keys())
            for slot in slots:
                value = c[slot]
                if not isinstance(value, pikepdf.Object):
                    continue
                if value.is_indirect:
                    replacement = mapping.get(value.objgen)
                    if replacement is not None:
                        c[slot] = replacement
                elif isinstance(value, Dictionary | Array):
                    stack.append(value)

    visit(pdf.trailer)
    for obj in pdf.objects:
        if isinstance(obj, Stream):
            visit(obj.stream_dict)
        elif isinstance(obj, Dictionary | Array):
            visit(obj)


def deduplicate(pdf: pikepdf.Pdf) -> DedupResult:
    """Merge byte-identical streams (images, font programs, ICC profiles, forms) and, after that, identical font
    and graphics-state dictionaries that became identical because their streams were merged."""
    result = DedupResult()
    seen: dict[bytes, pikepdf.Object] = {}
    mapping: dict[tuple[int, int], pikepdf.Object] = {}
    for obj in pdf.objects:
        if not isinstance(obj, Stream):
            continue
        d = obj.stream_dict
        # Page content streams and xref/object streams are never shared usefully; skip them cheaply.
        if d.get("/Type") in (Name.XRef, Name.ObjStm):
            continue
        key = _stream_key(obj)
        survivor = seen.get(key)
        if survivor is None:
            seen[key] = obj
        else:
            mapping[obj.objgen] = survivor
            result.bytes_saved += len(obj.read_raw_bytes())
    if mapping:
        _replace_refs(pdf, mapping)
    result.objects_merged += len(mapping)
    # Dictionaries: descriptors first (they point at font programs), then fonts (they point at descriptors).
    for types in ((Name.FontDescriptor,), (Name.Font, Name.ExtGState, Name.Pattern)):
        seen_d: dict[bytes, pikepdf.Object] = {}
        dmap: dict[tuple[int, int], pikepdf.Object] = {}
        for obj in pdf.objects:
            if isinstance(obj, Stream) or not isinstance(obj, Dictionary) or obj.get("/Type") not in types:
                continue
            key = _dict_key(obj)
            survivor = seen_d.get(key)
            if survivor is None:
                seen_d[key] = obj
            else:
                dmap[obj.objgen] = survivor
        if dmap:
            _replace_refs(pdf, dmap)
            result.objects_merged += len(dmap)
    return result


def _raw_len(obj: pikepdf.Object | None) -> int:
    if isinstance(obj, Stream):
        try:
            return len(obj.read_raw_bytes())
        except pikepdf.PdfError:
            return 0
    return 0


def _private_size(obj: pikepdf.Object) -> int:
    """Raw bytes of the streams inside a private-data dictionary (PieceInfo holds Illustrator/Photoshop data)."""
    total = 0
    stack = [obj]
    seen: set[tuple[int, int]] = set()
    while stack:
        o = stack.pop()
        if not isinstance(o, pikepdf.Object):
            continue
        if o.is_indirect:
            if o.objgen in seen:
                continue
            seen.add(o.objgen)
        if isinstance(o, Stream):
            total += _raw_len(o)
            stack.extend(o.stream_dict.values())
        elif isinstance(o, Dictionary):
            stack.extend(o.values())
        elif isinstance(o, Array):
            stack.extend(o)
    return total


def drop_private_data(pdf: pikepdf.Pdf) -> int:
    """Drop page thumbnails and application-private data (PieceInfo: Illustrator/Photoshop editing data), and
    per-object XMP packets on pages and XObjects. Nothing here is displayed or printed. Returns raw bytes."""
    saved = 0
    root = pdf.Root
    if "/PieceInfo" in root:
        saved += _private_size(root.PieceInfo)
        del root["/PieceInfo"]
    for page in pdf.pages:
        po = page.obj
        for key in ("/Thumb", "/PieceInfo", "/Metadata"):
            if key in po:
                saved += _private_size(po[key])
                del po[key]
    for obj in pdf.objects:
        if isinstance(obj, Stream) and obj.stream_dict.get("/Type") == Name.XObject:
            for key in ("/PieceInfo", "/Metadata"):
                if key in obj.stream_dict:
                    saved += _private_size(obj.stream_dict[key])
                    del obj.stream_dict[key]
    return saved


def remove_metadata(pdf: pikepdf.Pdf) -> int:
    """The caller asked for it: document XMP and the Info dictionary go (author, producer, dates...)."""
    saved = 0
    if "/Metadata" in pdf.Root:
        saved += _raw_len(pdf.Root.Metadata)
        del pdf.Root["/Metadata"]
    if "/Info" in pdf.trailer:
        del pdf.trailer["/Info"]
    return saved


_GENERIC_FILTERS = {Name.FlateDecode, Name.LZWDecode, Name.RunLengthDecode, Name.ASCIIHexDecode, Name.ASCII85Decode}


_ESTIMATE_BYTES = 256 << 10


def recompress_streams(pdf: pikepdf.Pdf) -> int:
    """Re-deflate every non-image stream at zlib's best level (decoding LZW/RunLength/ASCII filters first); a
    stream is only replaced when the result is smaller. For large Flate streams the gain is first estimated on
    their first 256 KiB, and they are left alone when it would be under 3%. Images are the image pass's job.
    Returns the raw bytes saved."""
    saved = 0
    for obj in pdf.objects:
        if not isinstance(obj, Stream):
            continue
        d = obj.stream_dict
        if d.get("/Subtype") == Name.Image or d.get("/Type") in (Name.XRef, Name.ObjStm):
            continue
        f = d.get("/Filter")
        filters = list(f) if isinstance(f, Array) else ([f] if f is not None else [])
        if not filters or not all(x in _GENERIC_FILTERS for x in filters):
            continue  # unfiltered streams are deflated by the writer; DCT/JPX/JBIG2/CCITT are left alone
        try:
            raw_len = len(obj.read_raw_bytes())
            data = obj.read_bytes()
        except pikepdf.PdfError:
            continue
        if filters == [Name.FlateDecode] and len(data) > _ESTIMATE_BYTES:
            sample = data[:_ESTIMATE_BYTES]
            estimate = len(zlib.compress(sample, 9)) * len(data) / len(sample)
            if estimate > 0.97 * raw_len:
                continue
        new = codecs.deflate(data)
        if len(new) < raw_len:
            obj.write(new, filter=Name.FlateDecode)
            saved += raw_len - len(new)
    return saved


def save(pdf: pikepdf.Pdf, dest: Path, *, linearize: bool = False, keep_encryption: bool = False) -> None:
    """The final rewrite: object streams, unreferenced objects gone, unfiltered streams deflated. Streams already
    encoded are written as they are (recompress_streams and the image pass chose their encoding; letting qpdf
    decode them again would drop PNG predictors and make images bigger)."""
    pikepdf.settings.set_flate_compression_level(9)
    if keep_encryption:
        # An owner-password-only file keeps its encryption and permissions (qpdf cannot combine that with an
        # explicit stream decode level, so streams are written as qpdf prefers).
        pdf.save(dest, object_stream_mode=pikepdf.ObjectStreamMode.generate, linearize=linearize, encryption=True)
        return
    pdf.save(
        dest,
        object_stream_mode=pikepdf.ObjectStreamMode.generate,
        compress_streams=True,
        stream_decode_level=pikepdf.StreamDecodeLevel.none,
        linearize=linearize,
        fix_metadata_version=False,
        deterministic_id=not linearize,  # same input and options -> byte-identical output
    )


def save_as_read(pdf: pikepdf.Pdf, dest: Path, *, keep_encryption: bool = False) -> None:
    """The document exactly as qpdf read it (its repairs applied, nothing else changed, streams as stored):
    verification's reference for inputs PDFium cannot open itself."""
    if keep_encryption:
        pdf.save(dest, encryption=True)
        return
    pdf.save(dest, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)


def _lenient_inflate(raw: bytes, limit: int) -> bytes:
    """Whatever a damaged Flate stream yields before the damage (fed in small steps so the output produced
    before a data error is kept), at most about ``limit`` bytes; tries raw deflate when the zlib header is
    missing."""
    best = b""
    for wbits in (ZLIB, RAW_DEFLATE):
        data = inflate_prefix(raw, limit, wbits)
        if len(data) > len(best):
            best = data
    return best


def repair_streams(pdf: pikepdf.Pdf, max_bytes: int) -> int:
    """Re-encode Flate streams that cannot be fully decoded with what can be recovered (readers show the same:
    they stop at the damage too), each at most about ``max_bytes`` decoded. Returns how many streams were
    repaired; verification checks the renders."""
    repaired = 0
    for obj in pdf.objects:
        if not isinstance(obj, Stream):
            continue
        d = obj.stream_dict
        if d.get("/Filter") != Name.FlateDecode or d.get("/DecodeParms") is not None:
            continue
        if d.get("/Subtype") == Name.Image:
            continue
        try:
            obj.read_bytes()
            continue
        except pikepdf.PdfError:
            pass
        data = _lenient_inflate(obj.read_raw_bytes(), max_bytes)
        obj.write(codecs.deflate(data), filter=Name.FlateDecode)
        repaired += 1
    return repaired


def undecodable_streams(pdf: pikepdf.Pdf) -> int:
    """How many streams with general-purpose filters fail to decode (what `qpdf --check` reports as errors)."""
    bad = 0
    for obj in pdf.objects:
        if not isinstance(obj, Stream):
            continue
        f = obj.stream_dict.get("/Filter")
        filters = list(f) if isinstance(f, Array) else ([f] if f is not None else [])
        if not filters or not all(x in _GENERIC_FILTERS for x in filters):
            continue
        try:
            obj.read_bytes()
        except pikepdf.PdfError:
            bad += 1
    return bad


# Content streams (content.py rewrites one stream; here: which streams, and whether the result is kept).
# Lossy levels round coordinates so that no point moves by more than a tenth of a device pixel at 2400 dpi.
LOSSY_CONTENT_TOLERANCE_PT = 72.0 / 2400 / 10


@dataclass(frozen=True)
class ContentLimits:
    """Streams above these are left as they are (parsing holds every instruction in memory)."""

    max_stream_bytes: int = 4 << 20
    max_instructions: int = 300_000
    # A stream above this is first rewritten on its first ``sample_bytes`` alone; when that sample, scaled up,
    # would not come out at least ``min_gain`` smaller than the stream as stored, the whole stream is left
    # alone (a producer's deflate may already beat zlib -9: rewriting it costs seconds for nothing).
    sample_above_bytes: int = 64 << 10
    sample_bytes: int = 24 << 10
    min_gain: float = 0.03
    # The document as a whole: a spread sample of its content streams (one in ``document_sample_every``, at
    # least ``document_sample_min``) is rewritten first; when what that saved, scaled to all of them, is below
    # ``min_document_gain`` of the file, the rest is left alone (on text documents the rewrite saves a few tenths
    # of a percent for seconds of CPU; on drawings, percents).
    document_sample_every: int = 8
    document_sample_min: int = 8
    min_document_gain: float = 0.01


@dataclass
class ContentResult:
    streams_rewritten: int = 0
    pages_joined: int = 0  # pages whose /Contents array became one stream
    streams_left: int = 0  # too large, unparsable, or not smaller
    bytes_before: int = 0  # stored bytes of the streams replaced
    bytes_after: int = 0
    stats: content.RewriteStats = field(default_factory=content.RewriteStats)

    @property
    def saved(self) -> int:
        return self.bytes_before - self.bytes_after


@dataclass
class _Target:
    """One content to rewrite: a stream, or a page's /Contents array (joined into one stream when rewritten)."""

    pieces: list[Stream]
    pages: list[pikepdf.Object] = field(default_factory=list)  # pages whose /Contents it is
    merge_text: bool = False  # only on pages (text render mode 0 at the start), none a knockout group
    user_unit: float = 1.0  # the largest /UserUnit of the pages drawing it


def _content_roles(pdf: pikepdf.Pdf) -> tuple[dict[tuple[int, int], int], set[tuple[int, int]]]:
    """How many page /Contents entries name each stream, and the streams that are one of several pieces of some
    page's array (a one-piece array is the page's whole content)."""
    uses: dict[tuple[int, int], int] = {}
    pieces: set[tuple[int, int]] = set()
    for page in pdf.pages:
        contents = page.obj.get("/Contents")
        for piece in contents if isinstance(contents, Array) else [contents]:
            if isinstance(piece, Stream) and piece.is_indirect:
                uses[piece.objgen] = uses.get(piece.objgen, 0) + 1
                if isinstance(contents, Array) and len(contents) > 1:
                    pieces.add(piece.objgen)
    return uses, pieces


def _other_content_streams(pdf: pikepdf.Pdf) -> list[tuple[tuple[int, int], Stream]]:
    """Form XObjects (annotation appearances included), tiling patterns and Type 3 glyph procedures."""
    found: dict[tuple[int, int], Stream] = {}
    for obj in pdf.objects:
        if isinstance(obj, Stream):
            d = obj.stream_dict
            if d.get("/Subtype") == Name.Form or d.get("/PatternType") == 1:
                found[obj.objgen] = obj
        elif isinstance(obj, Dictionary) and obj.get("/Subtype") == Name.Type3:
            procs = obj.get("/CharProcs")
            for _, proc in procs.items() if isinstance(procs, Dictionary) else []:
                if isinstance(proc, Stream) and proc.is_indirect:
                    found[proc.objgen] = proc
    return sorted(found.items())


def _page_targets(pdf: pikepdf.Pdf) -> list[_Target]:
    """Every page's content: a stream (shared by pages, perhaps), or an array whose pieces no other page uses. A
    stream that is also a piece of an array, a form or a glyph is left alone: it cannot be rewritten apart from
    what comes before and after it there."""
    uses, in_arrays = _content_roles(pdf)
    others = {og for og, _ in _other_content_streams(pdf)}
    found: dict[tuple[int, int], _Target] = {}
    for page in pdf.pages:
        po = page.obj
        contents = po.get("/Contents")
        items = list(contents) if isinstance(contents, Array) else [contents]
        pieces = [p for p in items if isinstance(p, Stream) and p.is_indirect and p.objgen not in others]
        if not pieces or len(pieces) != len(items):
            continue
        shared = [uses[p.objgen] > 1 for p in pieces] if len(pieces) > 1 else [pieces[0].objgen in in_arrays]
        if any(shared):
            continue
        target = found.setdefault(pieces[0].objgen, _Target(pieces, merge_text=True))
        target.pages.append(po)
        target.merge_text = target.merge_text and not content.is_knockout(po)
        target.user_unit = max(target.user_unit, float(po.get("/UserUnit", 1.0) or 1.0))
    return list(found.values())


def _stored_size(stream: Stream, raw: bytes, data: bytes) -> int:
    """What a stream costs as the final save writes it (unfiltered streams are deflated then)."""
    return len(raw) if stream.stream_dict.get("/Filter") is not None else len(codecs.deflate(data))


def _read_target(target: _Target, limits: ContentLimits) -> tuple[bytes, int] | None:
    """The target's content (pieces joined with newlines, as readers join them) and what it costs stored now;
    None when a piece cannot be decoded or the whole is above the size cap."""
    parts: list[bytes] = []
    stored = total = 0
    for piece in target.pieces:
        try:
            raw, data = piece.read_raw_bytes(), piece.read_bytes()
        except pikepdf.PdfError:
            return None
        total += len(data)
        if total > limits.max_stream_bytes:
            return None
        parts.append(data)
        stored += _stored_size(piece, raw, data)
    return b"\n".join(parts), stored


def _rewrite_target(
    pdf: pikepdf.Pdf, target: _Target, precision: content.Precision | None, limits: ContentLimits, result: ContentResult
) -> None:
    """Replace the target by its rewrite (or, for an array, by its pieces joined) when that is smaller stored."""
    read = _read_target(target, limits)
    if read is None:
        result.streams_left += 1
        return
    data, stored = read
    if not _sample_promises_gain(data, stored, target, precision, limits):
        result.streams_left += 1
        return
    stats = content.RewriteStats()
    new = content.rewrite_data(
        data,
        merge_text=target.merge_text,
        precision=precision,
        max_instructions=limits.max_instructions,
        stats=stats,
    )
    if new is None and len(target.pieces) > 1:
        new, stats = data, content.RewriteStats()
    encoded = codecs.deflate(new) if new is not None else b""
    if new is None or len(encoded) >= stored:
        result.streams_left += 1
        return
    _replace(pdf, target, encoded)
    result.streams_rewritten += new is not data
    result.pages_joined += len(target.pages) if len(target.pieces) > 1 else 0
    result.bytes_before += stored
    result.bytes_after += len(encoded)
    for name in ("operators_dropped", "text_objects_merged", "numbers_rounded"):
        setattr(result.stats, name, getattr(result.stats, name) + getattr(stats, name))


def _sample_promises_gain(
    data: bytes, stored: int, target: _Target, precision: content.Precision | None, limits: ContentLimits
) -> bool:
    """Whether rewriting a large stream looks worth it, judged on its beginning (cut after a line end, so a
    token is rarely split; a sample that does not tokenize says nothing and the whole stream is tried)."""
    if len(data) <= limits.sample_above_bytes:
        return True
    cut = data.rfind(b"\n", 0, limits.sample_bytes)
    sample = data[: cut + 1] if cut > 0 else data[: limits.sample_bytes]
    new = content.rewrite_data(
        sample,
        merge_text=target.merge_text,
        precision=precision,
        max_instructions=limits.max_instructions,
        stats=content.RewriteStats(),
    )
    if new is None:
        return True
    estimate = len(codecs.deflate(new)) * len(data) / len(sample)
    return estimate < stored * (1 - limits.min_gain)


def _replace(pdf: pikepdf.Pdf, target: _Target, encoded: bytes) -> None:
    if len(target.pieces) == 1:
        target.pieces[0].write(encoded, filter=Name.FlateDecode)
        return
    stream = pdf.make_stream(encoded)
    stream.stream_dict.Filter = Name.FlateDecode
    for page in target.pages:
        page.Contents = stream


def rewrite_content_streams(
    pdf: pikepdf.Pdf, *, lossy: bool, limits: ContentLimits | None = None, document_bytes: int | None = None
) -> ContentResult:
    """Rewrite every content stream (pages, forms, tiling patterns, Type 3 glyphs) with content.py; a page's content
    array becomes one stream. Streams that cannot be tokenized cleanly, or above the caps, stay as they are. Given
    the file's size (``document_bytes``), a spread sample goes first and the rest only when the sample promises
    ``limits.min_document_gain`` of it."""
    limits = limits or ContentLimits()
    result = ContentResult()
    # Page streams may have their coordinates rounded (lossy); forms, patterns and glyphs never.
    targets = [
        (t, content.Precision(LOSSY_CONTENT_TOLERANCE_PT, t.user_unit) if lossy else None) for t in _page_targets(pdf)
    ]
    targets += [(_Target([stream]), None) for _, stream in _other_content_streams(pdf)]
    sample, rest = targets, []
    if document_bytes is not None and len(targets) > limits.document_sample_min:
        every = max(1, min(limits.document_sample_every, len(targets) // limits.document_sample_min))
        sample, rest = targets[::every], [t for i, t in enumerate(targets) if i % every]
    # Stored sizes before anything is replaced: what the sample's saving is scaled by.
    sample_bytes = sum(_raw_size(t) for t, _ in sample) if rest else 0
    rest_bytes = sum(_raw_size(t) for t, _ in rest)
    for target, precision in sample:
        _rewrite_target(pdf, target, precision, limits, result)
    if rest and sample_bytes and document_bytes is not None:
        projected = result.saved * (sample_bytes + rest_bytes) / sample_bytes
        if projected < limits.min_document_gain * document_bytes:
            result.streams_left += len(rest)
            return result
    for target, precision in rest:
        _rewrite_target(pdf, target, precision, limits, result)
    return result


def _raw_size(target: _Target) -> int:
    return sum(len(piece.read_raw_bytes()) for piece in target.pieces)


def content_saving(result: ContentResult) -> TechniqueSaving | None:
    """The report's entry for the content-stream rewrite (None when nothing changed)."""
    if not result.streams_rewritten and not result.pages_joined:
        return None
    s = result.stats
    detail = (
        f"{result.streams_rewritten} stream(s) rewritten, {result.pages_joined} page content array(s) joined, "
        f"{s.operators_dropped} operator(s) dropped, {s.text_objects_merged} text object(s) merged, "
        f"{s.numbers_rounded} number(s) rounded"
    )
    return TechniqueSaving("content-streams", result.saved, detail)
