"""compress(): open, build candidates, verify each, keep the smallest that passes (or the original bytes)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium

from . import structural
from .analysis import bytes_by_kind
from .errors import IO_ERROR, MALFORMED_PDF, EngineError
from .fonts import optimize_fonts
from .images import ImageChange, ImageOptimizer, ImageSettings, QualitySearch
from .opening import OpenedPdf, open_input, readable_as_is, reopen
from .options import LEVEL_NAMES, LEVELS, CompressOptions, LevelProfile, Limits
from .placements import find_placements
from .report import DAMAGED, NOT_SMALLER, SIGNED, VERIFICATION_FAILED, Report, TechniqueSaving, Verification
from .resources import prune_unused_resources
from .safety import check_bombs, drop_usage_rights, is_signed
from .verify import MAX_SIDE_PX, RENDER_DPI, Gate, Outcome, Reference, choose_pages, verify

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
# Rounds of "revert the images of the pages that failed the visual gate, verify again".
_REVERT_ROUNDS = 2
_VISUAL_FAILURES = {"ssim", "color", "render", "identical"}


@dataclass(frozen=True)
class Attempt:
    """One way of building a candidate: a level profile plus the caller's overrides."""

    name: str
    profile: LevelProfile
    jpeg_quality: int | None
    images: bool = True  # False: structural techniques only


@dataclass
class Candidate:
    name: str
    path: Path
    size: int
    verification: Verification
    techniques: list[TechniqueSaving] = field(default_factory=list)
    attempt: Attempt | None = None


def _gate(profile: LevelProfile, options: CompressOptions) -> Gate:
    return Gate(
        ssim_min=profile.ssim_min,
        chroma_diff_max=profile.chroma_diff_max,
        chroma_ratio=profile.chroma_ratio,
        identical=not profile.lossy,
        check_colour=not options.grayscale,
    )


def _image_settings(attempt: Attempt, options: CompressOptions) -> ImageSettings:
    p = attempt.profile
    above, target, bitonal = p.downsample_above_dpi, p.target_dpi, p.bitonal_target_dpi
    if p.lossy and options.max_image_dpi is not None:
        cap = float(options.max_image_dpi)
        above = cap if above is None else min(above, cap)
        target = cap if target is None else min(target, cap)
        bitonal = cap if bitonal is None else min(bitonal, cap)
    return ImageSettings(
        search=_quality_search(attempt, options),
        lossy=p.lossy,
        downsample_above_dpi=above,
        target_dpi=target,
        jpeg_quality=attempt.jpeg_quality,
        min_jpeg_gain=p.min_jpeg_gain,
        quantize=p.quantize,
        grayscale=options.grayscale and p.lossy,
        image_ssim_min=p.image_ssim_min,
        bitonal_target_dpi=bitonal,
    )


# The per-image search's gate sits this far above the page gate: PDFium resamples the page render its own way, and
# the page's other changes spend some of the margin too.
_SEARCH_MARGIN = 0.01
# The share of the page's colour gate (block chroma difference, distance of the chroma ratio from 1) the search
# may use: its blocks lie on the image's grid, not the page's.
_SEARCH_CHROMA_SHARE = 0.7


def _quality_search(attempt: Attempt, options: CompressOptions) -> QualitySearch | None:
    """The per-image search of a lossy attempt, down to the level's floors (and under ``max_image_dpi``); a
    JPEG quality the caller chose is kept, only the resolution is searched then."""
    p = attempt.profile
    if not p.lossy or p.search_floor_dpi is None or p.search_floor_quality is None or attempt.jpeg_quality is None:
        return None
    floor_dpi = p.search_floor_dpi
    if options.max_image_dpi is not None:
        floor_dpi = min(floor_dpi, float(options.max_image_dpi))
    floor_quality = attempt.jpeg_quality if options.image_quality is not None else p.search_floor_quality
    lo, hi = p.chroma_ratio
    return QualitySearch(
        RENDER_DPI,
        min(0.995, p.ssim_min + _SEARCH_MARGIN),
        floor_dpi,
        floor_quality,
        chroma_diff_max=None if options.grayscale else p.chroma_diff_max * _SEARCH_CHROMA_SHARE,
        chroma_ratio=(1 - (1 - lo) * _SEARCH_CHROMA_SHARE, 1 + (hi - 1) * _SEARCH_CHROMA_SHARE),
        max_side_px=MAX_SIDE_PX,
    )


def _attempts(options: CompressOptions) -> list[Attempt]:
    """The requested level; with a target size, then ever more aggressive settings until one fits."""
    base = options.profile
    q = options.image_quality if options.image_quality is not None else base.jpeg_quality
    first = Attempt(options.level, base, q if base.lossy else None)
    if options.target_size_bytes is None:
        return [first]
    out = [first]
    for name in LEVEL_NAMES[LEVEL_NAMES.index(options.level) + 1 :]:
        prof = LEVELS[name]
        out.append(Attempt(name, prof, prof.jpeg_quality))
    worst = LEVELS["maximum"]
    for q2 in (35, 25):
        out.append(Attempt(f"maximum-q{q2}", replace(worst, image_ssim_min=0.75), q2))
    return out


def _write_output(src: Path, output_path: Path) -> None:
    """Copy ``src`` to ``output_path`` atomically (never leave a half-written output)."""
    tmp: Path | None = None
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".pdfsmaller-", suffix=".tmp", dir=output_path.parent)
        os.close(fd)
        tmp = Path(name)
        shutil.copyfile(src, tmp)
        os.replace(tmp, output_path)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise EngineError(IO_ERROR, "The output file cannot be written.") from None


def _technique_totals(changes: list[ImageChange]) -> list[TechniqueSaving]:
    by: dict[str, list[int]] = {}
    for ch in changes:
        t = by.setdefault(ch.technique, [0, 0])
        t[0] += ch.saved
        t[1] += 1
    return [TechniqueSaving(name, saved, f"{n} image(s)") for name, (saved, n) in sorted(by.items())]


class _Run:
    def __init__(
        self,
        opened: OpenedPdf,
        source: Path,
        password: str | None,
        options: CompressOptions,
        limits: Limits,
        work: Path,
        ref: Reference,
        step: Callable[[int], None],
        report: Report,
    ) -> None:
        self.opened = opened
        self.source = source
        self.password = password
        self.options = options
        self.limits = limits
        self.work = work
        self.ref = ref
        self.step = step
        self.report = report
        self.counter = 0
        self.streams_repaired = False
        # Encrypted inputs stay encrypted with the same passwords and permissions.
        self.output_password = password if opened.encrypted else None

    def _path(self, name: str) -> Path:
        self.counter += 1
        return self.work / f"c{self.counter:02d}-{name}.pdf"

    def _open(self) -> pikepdf.Pdf:
        return reopen(self.source, self.password)

    def _save(self, pdf: pikepdf.Pdf, name: str) -> Path:
        path = self._path(name)
        structural.save(pdf, path, linearize=self.options.linearize, keep_encryption=self.opened.encrypted)
        return path

    def _structural(self, pdf: pikepdf.Pdf, profile: LevelProfile) -> list[TechniqueSaving]:
        techniques = []
        fixed = structural.repair_streams(pdf, self.limits.max_decoded_stream_bytes)
        self.streams_repaired = self.streams_repaired or fixed > 0
        if fixed:
            techniques.append(TechniqueSaving("repair-streams", 0, f"{fixed} damaged stream(s) re-encoded"))
        rewritten = structural.rewrite_content_streams(
            pdf, lossy=profile.lossy, document_bytes=self.report.input_size_bytes
        )
        saving = structural.content_saving(rewritten)
        if saving is not None:
            techniques.append(saving)
        pruned = prune_unused_resources(pdf)
        if pruned:
            techniques.append(TechniqueSaving("drop-unused-resources", 0, f"{pruned} unused font/XObject name(s)"))
        dd = structural.deduplicate(pdf)
        if dd.objects_merged:
            techniques.append(
                TechniqueSaving("dedup", dd.bytes_saved, f"{dd.objects_merged} identical object(s) merged")
            )
        if profile.drop_private_data:
            saved = structural.drop_private_data(pdf)
            if saved:
                techniques.append(TechniqueSaving("drop-private-data", saved, "thumbnails, PieceInfo, per-object XMP"))
        if drop_usage_rights(pdf):
            techniques.append(
                TechniqueSaving("drop-usage-rights", 0, "Reader-extension rights (invalidated by any rewrite)")
            )
        if self.options.remove_metadata:
            techniques.append(TechniqueSaving("remove-metadata", structural.remove_metadata(pdf), "XMP and Info"))
        if profile.lossy:
            fr = optimize_fonts(pdf)
            if fr.fonts_rewritten or fr.subset or fr.converted:
                techniques.append(TechniqueSaving("fonts", fr.bytes_saved, fr.describe()))
        saved = structural.recompress_streams(pdf)
        if saved:
            techniques.append(TechniqueSaving("recompress-flate", saved, "streams re-deflated at level 9"))
        return techniques

    def build(self, attempt: Attempt, lo: int, hi: int) -> Candidate | None:
        """Build and verify one candidate; pages failing the visual gate get their images reverted."""
        gate = _gate(attempt.profile, self.options)
        pdf = self._open()
        opt: ImageOptimizer | None = None
        try:
            techniques = self._structural(pdf, attempt.profile)
            opt = self._optimize_images(pdf, attempt, lo, hi) if attempt.images else None
            path = self._save(pdf, attempt.name)
            self.step(lo + int((hi - lo) * 0.7))
            path, size, v = self._verify_with_retries(pdf, path, attempt, gate, opt)
            changes = opt.changes if opt is not None else []
            techniques = techniques + _technique_totals(changes)
            self.step(hi)
            return Candidate(attempt.name, path, size, v, techniques, attempt)
        finally:
            if opt is not None:
                opt.close()  # the originals it kept for reverts (a temporary file)
            pdf.close()

    def _optimize_images(self, pdf: pikepdf.Pdf, attempt: Attempt, lo: int, hi: int) -> ImageOptimizer:
        opt = ImageOptimizer(pdf, _image_settings(attempt, self.options), self.limits.max_image_pixels)
        placements = find_placements(pdf)
        span = (hi - lo) * 0.6
        opt.run(placements, lambda f: self.step(lo + int(span * f)))
        return opt

    def _verify_with_retries(
        self, pdf: pikepdf.Pdf, path: Path, attempt: Attempt, gate: Gate, opt: ImageOptimizer | None
    ) -> tuple[Path, int, Verification]:
        """Verify the saved candidate; while only the visual gate fails, on pages whose images changed, redo those
        images (first at a higher quality, then as they were), save and verify again. The last file verified."""
        settings = _image_settings(attempt, self.options)
        for round_ in range(_REVERT_ROUNDS + 1):
            size = path.stat().st_size
            name = attempt.name if round_ == 0 else f"{attempt.name}-retry{round_}"
            outcome = self._verify_and_record(path, gate, opt, name, size)
            suspects = _retry_suspects(outcome, opt, round_)
            if opt is None or not suspects:
                break
            settings = _retry_images(opt, suspects, settings, round_)
            path = self._save(pdf, f"{attempt.name}-r{round_ + 1}")
        return path, size, outcome.verification

    def _verify_and_record(self, path: Path, gate: Gate, opt: ImageOptimizer | None, name: str, size: int) -> Outcome:
        """Verify on the pages chosen (spread, and those whose images changed most); the try goes in the report."""
        changes = opt.changes if opt is not None else []
        pages = choose_pages(self.opened.pages, _page_weights(changes))
        outcome = verify(self.ref, path, gate, pages, deep_syntax=self.streams_repaired, password=self.output_password)
        v = outcome.verification
        self.report.candidates.append(
            {
                "name": name,
                "size": size,
                "passed": v.passed,
                "failures": list(v.failures),
                "ssim_min": v.ssim_min,
                "images_changed": len(changes),
            }
        )
        return outcome


def _page_weights(changes: list[ImageChange]) -> dict[int, int]:
    """Bytes saved by image changes, per page."""
    weights: dict[int, int] = {}
    for ch in changes:
        for p in ch.pages:
            weights[p] = weights.get(p, 0) + ch.saved
    return weights


def _retry_suspects(outcome: Outcome, opt: ImageOptimizer | None, round_: int) -> list[ImageChange]:
    """The image changes on pages that failed only the visual gate, when another round is left; else none."""
    v = outcome.verification
    changes = opt.changes if opt is not None else []
    if v.passed or opt is None or not changes or not outcome.bad_pages:
        return []
    if set(v.failures) - _VISUAL_FAILURES or round_ == _REVERT_ROUNDS:
        return []
    return [ch for ch in changes if ch.pages & outcome.bad_pages]


def _retry_images(
    opt: ImageOptimizer, suspects: list[ImageChange], settings: ImageSettings, round_: int
) -> ImageSettings:
    """First retry: the same images at a clearly higher quality and a gentler per-image gate (searched again with
    a stricter gate, where the search applies); then the originals on the pages that still fail. The settings now
    in force."""
    if round_ == 0 and settings.jpeg_quality is not None and settings.jpeg_quality < 90:
        search = settings.search
        if search is not None:
            # Half-way from the search's gate to identical, and no lower resolution than the level's own.
            floor_dpi = max(search.floor_dpi, settings.target_dpi or search.floor_dpi)
            search = replace(search, ssim_min=(1.0 + search.ssim_min) / 2, floor_dpi=floor_dpi)
        settings = replace(
            settings,
            jpeg_quality=min(92, settings.jpeg_quality + 15),
            image_ssim_min=min(0.98, settings.image_ssim_min + 0.03),
            quantize=False,
            search=search,
        )
        opt.redo(suspects, settings)
    else:
        opt.undo(suspects)
    return settings


# What the PDF libraries raise on damaged data: while the input is being read, it means the file is damaged.
_INPUT_DAMAGE = (pikepdf.PdfError, pdfium.PdfiumError, zlib.error)


class _InputIsTheAnswer(Exception):
    """The input's own bytes are the output, for a reason found while opening it (``kept_original_reason``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


_SIGNED_DETAIL = (
    "The PDF is digitally signed: it is returned unchanged, since compressing it would invalidate the signature. "
    "Allow breaking the signature to compress it anyway."
)
_DAMAGED_DETAIL = (
    "The PDF is damaged in a way that cannot be rewritten safely, but it opens as it is: it is returned unchanged"
)


@contextlib.contextmanager
def _reading_input() -> Iterator[None]:
    try:
        yield
    except _INPUT_DAMAGE as exc:
        log.info("input unreadable (%s): %s", type(exc).__name__, exc)
        raise EngineError(MALFORMED_PDF, "The PDF is damaged and could not be repaired.") from None


def _open_and_check(
    input_path: Path, options: CompressOptions, limits: Limits, work: Path, report: Report
) -> tuple[OpenedPdf, Reference]:
    """Open the input, check its caps and signatures, record what it holds, and build verification's reference."""
    opened = open_input(input_path, options.password, work)
    with opened.pdf:
        check_bombs(opened.pdf, limits)
        report.pages = opened.pages
        report.repaired = opened.repaired
        report.warnings.extend(opened.warnings)
        report.bytes_by_kind_before = bytes_by_kind(opened.pdf, report.input_size_bytes)
        if is_signed(opened.pdf) and not options.allow_signature_break:
            raise _InputIsTheAnswer(SIGNED, _SIGNED_DETAIL)
        return opened, _reference(input_path, options.password, opened, work)


def _reference(input_path: Path, password: str | None, opened: OpenedPdf, work: Path) -> Reference:
    """What candidates are compared with: the input as PDFium reads it, when PDFium reads all its pages;
    otherwise (a file only qpdf repairs, such as a cut-short download) the repaired file as qpdf rewrites it,
    which is also what every candidate is built from."""
    if opened.reader_pages.get("pdfium") == opened.pages:
        with contextlib.suppress(pdfium.PdfiumError):
            return Reference(input_path, password, opened.pages)
    repaired = work / "reference.pdf"
    structural.save_as_read(opened.pdf, repaired, keep_encryption=opened.encrypted)
    try:
        ref = Reference(repaired, password if opened.encrypted else None, opened.pages)
    except pdfium.PdfiumError:
        raise EngineError(MALFORMED_PDF, "The PDF is damaged and could not be repaired.") from None
    if len(ref.doc) != opened.pages:
        ref.close()
        raise EngineError(MALFORMED_PDF, "The PDF is damaged: some pages could not be recovered.")
    return ref


def compress(
    input_path: Path,
    output_path: Path,
    options: CompressOptions | None = None,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> Report:
    t0 = time.monotonic()
    options = options or CompressOptions()
    options.validate()
    limits = limits or Limits()
    input_path, output_path = Path(input_path), Path(output_path)

    def step(pct: int) -> None:
        if progress is not None:
            progress(max(0, min(100, pct)))

    report = _new_report(input_path, options)
    step(0)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-") as td:
        _compress_in(Path(td), input_path, output_path, options, limits, step, report)
    if options.target_size_bytes is not None:
        report.target_met = report.output_size_bytes <= options.target_size_bytes
    report.seconds = round(time.monotonic() - t0, 3)
    step(100)
    return report


def _new_report(input_path: Path, options: CompressOptions) -> Report:
    try:
        in_size = input_path.stat().st_size
    except OSError:
        raise EngineError(IO_ERROR, "The input file cannot be read.") from None
    return Report(
        input_size_bytes=in_size,
        level=options.level,
        options=options.public_dict(),
        target_size_bytes=options.target_size_bytes,
    )


def _compress_in(
    work: Path,
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits,
    step: Callable[[int], None],
    report: Report,
) -> None:
    """Open and check the input, search for the best candidate in ``work``, write the output, fill the report."""
    phases = report.seconds_by_phase
    t = time.monotonic()
    try:
        opened, ref = _open_readable(input_path, options, limits, work, report)
    except _InputIsTheAnswer as answer:
        phases["open"] = round(time.monotonic() - t, 3)
        _keep_original(input_path, output_path, report, answer.reason, answer.detail)
        return
    source = work / "repaired.pdf" if (work / "repaired.pdf").exists() else input_path
    password = options.password if source == input_path else None
    if options.max_image_dpi is not None and not options.profile.lossy:
        report.warnings.append("max_image_dpi ignored: the lossless level never resamples images")
    phases["open"] = round(time.monotonic() - t, 3)
    step(10)
    try:
        run = _Run(opened, source, password, options, limits, work, ref, step, report)
        best = _search(run, options, report.input_size_bytes, phases)
        if best is not None:
            _deliver(best, output_path, options, report)
        else:
            _keep_original(input_path, output_path, report)
    finally:
        ref.close()


def _open_readable(
    input_path: Path, options: CompressOptions, limits: Limits, work: Path, report: Report
) -> tuple[OpenedPdf, Reference]:
    """``_open_and_check``; when it finds the file damaged beyond a safe rewrite but the input as it is opens and
    its pages draw (``readable_as_is``), the input is the answer (DAMAGED_PDF) instead of a failed job."""
    try:
        with _reading_input():
            return _open_and_check(input_path, options, limits, work, report)
    except EngineError as exc:
        if exc.reason != MALFORMED_PDF:
            raise
        as_is = readable_as_is(input_path, options.password, limits.max_pages)
        if as_is is None:
            raise
        log.info("input damaged (%s) but readable as it is: returned unchanged", exc.message)
        report.pages = as_is.pages
        report.warnings.append(exc.message)
        drawn = f"PDFium draws {as_is.drawn} of its {as_is.pages} page(s) as it is"
        raise _InputIsTheAnswer(DAMAGED, f"{_DAMAGED_DETAIL} ({drawn}.)") from None


def _deliver(best: Candidate, output_path: Path, options: CompressOptions, report: Report) -> None:
    _write_output(best.path, output_path)
    report.output_size_bytes = best.size
    report.verification = best.verification
    report.techniques = best.techniques
    if best.attempt is not None and best.attempt.name != options.level:
        report.warnings.append(f"settings used: {best.attempt.name}")
    with pikepdf.open(best.path, password=options.password or "") as out:
        report.bytes_by_kind_after = bytes_by_kind(out, best.size)
    _add_structural_saving(report)


def _keep_original(
    input_path: Path, output_path: Path, report: Report, reason: str | None = None, detail: str = ""
) -> None:
    """The input's own bytes as the output, with why: ``reason`` when given, else why no candidate was used."""
    _write_output(input_path, output_path)
    report.output_size_bytes = report.input_size_bytes
    report.kept_original = True
    report.bytes_by_kind_after = dict(report.bytes_by_kind_before)
    if reason is not None:
        report.kept_original_reason, report.kept_original_detail = reason, detail
    elif any(c["passed"] for c in report.candidates):
        report.kept_original_reason = NOT_SMALLER
        report.kept_original_detail = "No verified candidate was smaller than the input."
    else:
        report.kept_original_reason = VERIFICATION_FAILED
        fails = sorted({f for c in report.candidates for f in c["failures"]})
        report.kept_original_detail = "Every candidate failed verification: " + ", ".join(fails)


def _add_structural_saving(report: Report) -> None:
    """What the final rewrite (object streams, xref stream, dropped unreferenced objects) saved on its own:
    the total saving minus what the named techniques account for."""
    named = sum(t.saved_bytes for t in report.techniques)
    rest = report.input_size_bytes - report.output_size_bytes - named
    report.techniques.append(TechniqueSaving("rewrite", rest, "object streams, unreferenced objects dropped"))


def _guarded_build(run: _Run, attempt: Attempt, lo: int, hi: int, *, last_resort: bool = False) -> Candidate | None:
    """A technique that trips over an unusual file, or runs out of memory on it, must not fail the job: the
    candidate is dropped (and the fallback or the original bytes used), the failure logged and recorded. Only
    the last resort, the lossless structural rewrite, running out of memory ends the run (OUT_OF_MEMORY)."""
    try:
        return run.build(attempt, lo, hi)
    except EngineError:
        raise
    except MemoryError:
        if last_resort:
            raise
        log.warning("candidate %s ran out of memory; dropped", attempt.name)
        failure = "memory"
    except Exception:
        log.exception("candidate %s failed to build", attempt.name)
        failure = "error"
    gc.collect()  # what the dropped candidate held, before the next one allocates
    run.report.candidates.append(
        {"name": attempt.name, "size": 0, "passed": False, "failures": [failure], "ssim_min": None, "images_changed": 0}
    )
    return None


def _search(run: _Run, options: CompressOptions, in_size: int, phases: dict[str, float]) -> Candidate | None:
    """Smallest verified candidate. Ladder: the level (with page-wise reverts), then structural-only, then a plain
    rewrite; with a target size, ever more aggressive attempts until one fits."""
    t = time.monotonic()
    passing: list[Candidate] = []
    attempts = _attempts(options)
    span = 80 // len(attempts)
    failures: set[str] = set()
    any_passed = False
    for i, attempt in enumerate(attempts):
        c = _guarded_build(run, attempt, 10 + i * span, 10 + (i + 1) * span)
        if c is None:
            failures |= set(run.report.candidates[-1]["failures"])
            continue
        failures |= set(c.verification.failures)
        any_passed = any_passed or c.verification.passed
        if c.verification.passed and c.size < in_size:
            passing.append(c)
            if options.target_size_bytes is None or c.size <= options.target_size_bytes:
                break
    phases["candidates"] = round(time.monotonic() - t, 3)
    # Fallback: the lossless structural rewrite alone, when a technique of the level broke something it can
    # fix. Not when a candidate passed but was not smaller (the fallback cannot be smaller either), nor when
    # the failures are the file's own (it does not open cleanly, readers disagree on its pages).
    if not passing and not any_passed and failures - {"opens", "pages"}:
        structural_only = Attempt("structural", LEVELS["lossless"], None, images=False)
        c = _guarded_build(run, structural_only, 90, 95, last_resort=True)
        if c is not None and c.verification.passed and c.size < in_size:
            passing.append(c)
        phases["fallback"] = round(time.monotonic() - t - phases["candidates"], 3)
    if not passing:
        return None
    if options.target_size_bytes is not None:
        fitting = [c for c in passing if c.size <= options.target_size_bytes]
        if fitting:
            return max(fitting, key=lambda c: c.size)  # the least aggressive result that fits
    return min(passing, key=lambda c: c.size)
