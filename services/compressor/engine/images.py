"""Image techniques: downsampling by displayed resolution, JPEG re-encoding, better lossless encoding,
palette conversion and quantisation, CCITT G4 for bitonal images. An image is only replaced when the
replacement is smaller; every replacement is recorded so it can be reverted page by page."""

from __future__ import annotations

import io
import logging
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name, Stream
from PIL import Image

from . import bitonal, codecs
from .codecs import Buffer
from .errors import TOO_COMPLEX, EngineError
from .placements import Placement
from .safety import image_size_in_pixels
from .ssim import chroma_compare, ssim, ssim_in_strips

log = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = None  # the engine enforces its own cap (Limits.max_image_pixels) before decoding

# Images at most this many decoded bytes are decoded for lossy work; larger ones are only left as they are
# (keeps the child well under its memory limit: decode + resample + encode hold ~3 copies).
_MAX_DECODE_BYTES = 120 << 20
# Images smaller than this (raw bytes) are not worth a re-encode (JPEG headers alone are ~600 bytes).
_MIN_RAW_BYTES = 2048
_LOSSLESS_FILTERS = {Name.FlateDecode, Name.LZWDecode, Name.RunLengthDecode, Name.ASCIIHexDecode, Name.ASCII85Decode}
_DEVICE_COMPONENTS = {Name.DeviceGray: 1, Name.DeviceRGB: 3, Name.DeviceCMYK: 4}


@dataclass(frozen=True)
class ImageSettings:
    lossy: bool
    downsample_above_dpi: float | None
    target_dpi: float | None
    jpeg_quality: int | None
    min_jpeg_gain: float
    quantize: bool  # graphics with many colours may be reduced to a 256-colour palette
    grayscale: bool
    image_ssim_min: float  # per-image quality gate for lossy replacements
    # 1-bit images (and effectively bitonal scans) displayed at twice this or more are reduced by an integer
    # factor towards it. None: twice ``target_dpi`` (the levels' bitonal targets are about that).
    bitonal_target_dpi: float | None = None
    search: QualitySearch | None = None  # None: one JPEG at ``jpeg_quality`` and the level's resolution


@dataclass(frozen=True)
class QualitySearch:
    """Per-image search for photographs of known placement: the smallest (resolution, JPEG quality) whose image,
    seen at the size the page gate renders it, keeps ``ssim_min`` against the original seen the same way."""

    display_dpi: float  # the resolution the page gate renders at
    ssim_min: float  # the page gate's threshold plus a margin (the page render resamples differently)
    floor_dpi: float  # never resampled below this
    floor_quality: int  # never encoded below this
    # The page's colour gate, narrowed by a margin (blocks on the image's grid, not the page's): the largest block
    # chroma difference and the summed-chroma ratio range. None: colour not checked (grayscale output).
    chroma_diff_max: float | None = None
    chroma_ratio: tuple[float, float] = (0.0, float("inf"))
    max_side_px: int = 3000  # the page render's cap on its long side


class SnapshotStore:
    """Original raw stream data of replaced images, kept in a temporary file rather than in memory (a document
    of many large images would otherwise hold a second copy of each). -> (offset, length) handles."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pdfsmaller-images-")  # noqa: SIM115 - closed by close()
        self._end = 0

    def put(self, data: bytes) -> tuple[int, int]:
        self._file.seek(self._end)
        self._file.write(data)
        at = (self._end, len(data))
        self._end += len(data)
        return at

    def get(self, at: tuple[int, int]) -> bytes:
        self._file.seek(at[0])
        return self._file.read(at[1])

    def close(self) -> None:
        self._file.close()


@dataclass
class ImageChange:
    objgen: tuple[int, int]
    technique: str
    old_bytes: int
    new_bytes: int
    pages: set[int]
    # What is needed to put the original back: where its raw data is in the store, and its stream dictionary.
    raw_at: tuple[int, int] = (0, 0)
    dict_items: dict[str, pikepdf.Object] = field(repr=False, default_factory=dict)

    @property
    def saved(self) -> int:
        return self.old_bytes - self.new_bytes


def _filters(d: pikepdf.Object) -> list[pikepdf.Object]:
    f = d.get("/Filter")
    if f is None:
        return []
    return list(f) if isinstance(f, Array) else [f]


def _colorspace_info(cs: pikepdf.Object | None) -> tuple[str, int, pikepdf.Object | None] | None:
    """-> (kind, components, palette-base) with kind in device|icc|indexed, or None when not handled
    (Separation, DeviceN, Lab, Pattern, CalRGB...: left untouched)."""
    if cs is None:
        return None
    if isinstance(cs, Name):
        n = _DEVICE_COMPONENTS.get(cs)
        return ("device", n, None) if n else None
    if isinstance(cs, Array) and len(cs) >= 2:
        family = cs[0]
        if family == Name.ICCBased and isinstance(cs[1], Stream):
            n = int(cs[1].stream_dict.get("/N", 0))
            return ("icc", n, None) if n in (1, 3, 4) else None
        if family == Name.Indexed and len(cs) == 4:
            base = _colorspace_info(cs[1])
            if base is None or base[0] == "indexed":
                return None
            return ("indexed", 1, cs[1])
    return None


def _palette_bytes(cs: Any, base_n: int) -> bytes | None:
    lookup = cs[3]
    try:
        data = lookup.read_bytes() if isinstance(lookup, Stream) else bytes(lookup)
    except (pikepdf.PdfError, TypeError, ValueError):
        return None
    hival = int(cs[2])
    if not 0 <= hival <= 255:  # the PDF maximum; an absurd value must not size an allocation
        return None
    need = (hival + 1) * base_n
    if len(data) < need:
        data = data + bytes(need - len(data))
    return data[:need]


class _Best:
    """The smallest replacement offered so far; only ever smaller than the original."""

    def __init__(self, original_len: int) -> None:
        self.original_len = original_len
        self.data: bytes | None = None
        self.filt: Name = Name.FlateDecode
        self.updates: dict[str, Any] = {}
        self.technique = ""

    def consider(
        self,
        data: bytes,
        updates: dict[str, Any],
        technique: str,
        filt: Name = Name.FlateDecode,
        max_fraction: float = 1.0,
    ) -> None:
        # max_fraction < 1 demands a real gain (e.g. before paying another JPEG generation for a few bytes).
        if len(data) >= self.original_len * max_fraction:
            return
        if self.data is None or len(data) < len(self.data):
            self.data, self.filt, self.updates, self.technique = data, filt, updates, technique


class _Snapshot:
    @staticmethod
    def take(obj: Stream) -> tuple[bytes, dict[str, Any]]:
        return obj.read_raw_bytes(), {k: obj.stream_dict[k] for k in obj.stream_dict.keys()}  # noqa: SIM118

    @staticmethod
    def restore(obj: Stream, raw: bytes, items: dict[str, Any]) -> None:
        obj.write(raw, filter=items.get("/Filter"), decode_parms=items.get("/DecodeParms"))
        for k in list(obj.stream_dict.keys()):
            if k not in items:
                del obj.stream_dict[k]
        for k, v in items.items():
            if k != "/Length":
                obj.stream_dict[k] = v


def revert(changes: list[ImageChange], objects: dict[tuple[int, int], Stream], store: SnapshotStore) -> None:
    for ch in changes:
        obj = objects.get(ch.objgen)
        if obj is not None:
            _Snapshot.restore(obj, store.get(ch.raw_at), ch.dict_items)


def _pil_from_samples(samples: Buffer, w: int, h: int, n: int) -> Image.Image | None:
    mode = {1: "L", 3: "RGB", 4: "CMYK"}.get(n)
    if mode is None or len(samples) < w * h * n:
        return None
    size = w * h * n
    data = samples if len(samples) == size and not isinstance(samples, memoryview) else bytes(samples[:size])
    return Image.frombuffer(mode, (w, h), data, "raw", mode, 0, 1)


def _gray_ssim(a: Image.Image, b: Image.Image) -> float:
    """Quality of a replacement: SSIM of the luminance at a common size (at most 600 px on the long side)."""
    w, h = b.size
    scale = min(1.0, 600.0 / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return ssim(_gray_at(a, size), _gray_at(b, size))


def _gray_at(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Luminance at ``size`` as float32; resized first (a full-size gray copy of a large image is not needed)."""
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img.convert("L"), dtype=np.float32)


class ImageOptimizer:
    def __init__(self, pdf: pikepdf.Pdf, settings: ImageSettings, max_image_pixels: int) -> None:
        self.pdf = pdf
        self.s = settings
        self.max_image_pixels = max_image_pixels
        self.changes: list[ImageChange] = []
        self.objects: dict[tuple[int, int], Stream] = {}
        self._placements: dict[tuple[int, int], Placement] = {}
        self._smasks: set[tuple[int, int]] = set()
        self._stencils: set[tuple[int, int]] = set()
        self.snapshots = SnapshotStore()

    def close(self) -> None:
        self.snapshots.close()

    # -- discovery -------------------------------------------------------------------------------------

    def _collect(self) -> tuple[list[Stream], set[tuple[int, int]], set[tuple[int, int]]]:
        images: list[Stream] = []
        smasks: set[tuple[int, int]] = set()
        stencils: set[tuple[int, int]] = set()
        for obj in self.pdf.objects:
            if not isinstance(obj, Stream) or obj.stream_dict.get("/Subtype") != Name.Image:
                continue
            d = obj.stream_dict
            if (image_size_in_pixels(d) or 0) > self.max_image_pixels:
                raise EngineError(TOO_COMPLEX, "The PDF contains an image larger than the allowed size.")
            images.append(obj)
            self.objects[obj.objgen] = obj
            sm = d.get("/SMask")
            if isinstance(sm, Stream):
                smasks.add(sm.objgen)
            mk = d.get("/Mask")
            if isinstance(mk, Stream):
                stencils.add(mk.objgen)
        return images, smasks, stencils

    # -- main ------------------------------------------------------------------------------------------

    def run(self, placements: dict[tuple[int, int], Placement], progress: Callable[[float], None]) -> None:
        images, self._smasks, self._stencils = self._collect()
        self._placements = placements
        # A soft mask is displayed exactly where its image is.
        for obj in images:
            sm = obj.stream_dict.get("/SMask")
            if isinstance(sm, Stream) and obj.objgen in placements:
                p = placements[obj.objgen]
                mp = placements.setdefault(sm.objgen, Placement())
                mp.pages |= p.pages
                if p.effective_dpi is None:
                    mp.unknown = True
                else:
                    w = int(obj.stream_dict.get("/Width", 1) or 1)
                    mw = int(sm.stream_dict.get("/Width", 1) or 1)
                    dpi = p.effective_dpi * mw / w
                    mp.min_dpi = dpi if mp.min_dpi is None else min(mp.min_dpi, dpi)
        total = max(1, len(images))
        for i, obj in enumerate(images):
            progress(i / total)
            self._process(obj)

    def _process(self, obj: Stream) -> None:
        placement = self._placements.get(obj.objgen) or Placement(unknown=True)
        try:
            self._one(obj, placement, is_smask=obj.objgen in self._smasks, is_stencil=obj.objgen in self._stencils)
        except EngineError:
            raise
        except (pikepdf.PdfError, OSError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
            # An image we cannot decode is left exactly as it is.
            log.debug("image %s left unchanged: %s", obj.objgen, exc)
        except MemoryError:
            # One technique on one image ran out of memory: that image stays as it is (replacements are only
            # written once complete) and the job goes on with the next one.
            log.warning("image %s left unchanged: out of memory", obj.objgen)

    def redo(self, changes: list[ImageChange], settings: ImageSettings) -> None:
        """Put the originals of ``changes`` back and process those images again with gentler settings."""
        revert(changes, self.objects, self.snapshots)
        gone = {id(ch) for ch in changes}
        self.changes = [ch for ch in self.changes if id(ch) not in gone]
        kept = self.s
        self.s = settings
        try:
            for ch in changes:
                obj = self.objects.get(ch.objgen)
                if obj is not None:
                    self._process(obj)
        finally:
            self.s = kept

    def undo(self, changes: list[ImageChange]) -> None:
        revert(changes, self.objects, self.snapshots)
        gone = {id(ch) for ch in changes}
        self.changes = [ch for ch in self.changes if id(ch) not in gone]

    def _record(
        self,
        obj: Stream,
        technique: str,
        pages: set[int],
        snap: tuple[bytes, dict[str, pikepdf.Object]],
        new_len: int,
    ) -> None:
        at = self.snapshots.put(snap[0])
        self.changes.append(ImageChange(obj.objgen, technique, len(snap[0]), new_len, set(pages), at, snap[1]))

    def _scale_for(self, placement: Placement, w: int, h: int) -> float:
        s = self.s
        dpi = placement.effective_dpi
        if not s.lossy or dpi is None or s.downsample_above_dpi is None or s.target_dpi is None:
            return 1.0
        if dpi <= s.downsample_above_dpi:
            return 1.0
        scale = s.target_dpi / dpi
        # Never below 16 px on a side (tiny sprites are cheaper as they are).
        if min(w, h) * scale < 16:
            return 1.0
        return scale

    def _one(self, obj: Stream, placement: Placement, *, is_smask: bool, is_stencil: bool) -> None:
        d = obj.stream_dict
        raw_len = len(obj.read_raw_bytes())
        if raw_len < _MIN_RAW_BYTES:
            return
        filters = _filters(d)
        w, h = int(d.get("/Width", 0) or 0), int(d.get("/Height", 0) or 0)
        bpc = int(d.get("/BitsPerComponent", 0) or 0)
        if w <= 0 or h <= 0:
            return
        if d.get("/ImageMask") is True or is_stencil or (bpc == 1 and not is_smask):
            self._bitonal(obj, filters, w, h, placement, may_resample=not is_stencil and _plain_bitonal(d))
            return
        is_jpx = bool(filters) and filters[-1] == Name.JPXDecode
        if any(f in (Name.JBIG2Decode, Name.CCITTFaxDecode) for f in filters):
            return
        if bpc not in (1, 2, 4, 8) and not (is_jpx and bpc == 0):  # JPX may leave the depth to the codestream
            return
        cs_info = _colorspace_info(d.get("/ColorSpace")) if not is_smask else ("device", 1, None)
        is_dct = bool(filters) and filters[-1] == Name.DCTDecode
        if cs_info is None and not (is_jpx and d.get("/ColorSpace") is None):
            return
        if all(f in _LOSSLESS_FILTERS for f in filters):
            self._from_lossless(obj, w, h, bpc, cs_info, placement, is_smask=is_smask)
        elif self.s.lossy and (is_dct or is_jpx) and len(filters) == 1 and not is_smask:
            self._from_lossy(obj, w, h, cs_info, placement, is_jpx=is_jpx)

    # -- bitonal ---------------------------------------------------------------------------------------

    def _bitonal(
        self,
        obj: Stream,
        filters: list[pikepdf.Object],
        w: int,
        h: int,
        placement: Placement,
        *,
        may_resample: bool,
    ) -> None:
        """1-bit images stay 1-bit, packed: CCITT G4 (or better Flate) when smaller, and at lossy levels reduced
        when displayed far above the level's bitonal resolution; G4/JBIG2 data is left as is."""
        if not all(f in _LOSSLESS_FILTERS for f in filters):
            return
        best = _Best(len(obj.read_raw_bytes()))
        samples = _read_samples(obj, (w + 7) // 8 * h)
        if samples is None:
            return
        _consider_bits(best, samples, w, h, {}, "bitonal-ccitt-g4", "lossless-flate")
        factor = self._bitonal_factor(placement, w, h) if may_resample else 1
        if factor > 1:
            ink_bit = _ink_bit(obj.stream_dict)
            pf = bitonal.preview_factor(w, h)
            original = bitonal.preview(bitonal.ink_of_bits(samples, w, h, pf, ink_bit), pf)
            packed = bitonal.pack(bitonal.ink_of_bits(samples, w, h, factor, ink_bit), factor, ink_bit)
            nw, nh = bitonal.reduced_size(w, h, factor)
            if self._bits_quality_ok(original, packed, nw, nh, ink_bit):
                sized = {"/Width": nw, "/Height": nh}
                _consider_bits(best, packed, nw, nh, sized, "downsample-bitonal", "downsample-bitonal")
        del samples
        if best.data is not None:
            self._apply(obj, best, best.technique, placement)

    def _bitonal_factor(self, placement: Placement, w: int, h: int) -> int:
        """The integer factor a bitonal image is reduced by at this level (1: kept at its resolution)."""
        s = self.s
        target = s.bitonal_target_dpi
        if target is None and s.target_dpi is not None:
            target = 2 * s.target_dpi
        dpi = placement.effective_dpi
        if not s.lossy or dpi is None or target is None:
            return 1
        factor = int(dpi / target)  # never below the target
        return factor if factor >= 2 and min(w, h) // factor >= 16 else 1

    def _bits_quality_ok(self, original: Image.Image, packed: bytes, w: int, h: int, ink_bit: int) -> bool:
        pf = bitonal.preview_factor(w, h)
        candidate = bitonal.preview(bitonal.ink_of_bits(packed, w, h, pf, ink_bit), pf)
        return _gray_ssim(original, candidate) >= self.s.image_ssim_min

    def _gray_to_bitonal(self, img: Image.Image, samples: Buffer, placement: Placement, best: _Best) -> None:
        """An 8-bit scan that is effectively black and white (gray or RGB) as a 1-bit image (thresholded at
        mid-gray, reduced like a 1-bit image when displayed far above the level's bitonal resolution)."""
        w, h = img.size
        n = len(img.getbands())
        if not bitonal.effectively_bitonal(samples, w, h, n):
            return
        factor = self._bitonal_factor(placement, w, h)
        packed = bitonal.pack(bitonal.ink_of_gray(samples, w, h, n, factor), factor)
        nw, nh = bitonal.reduced_size(w, h, factor)
        if not self._bits_quality_ok(img, packed, nw, nh, 0):
            return
        updates = {"/Width": nw, "/Height": nh, "/BitsPerComponent": 1, "/ColorSpace": Name.DeviceGray, "/Decode": None}
        _consider_bits(best, packed, nw, nh, updates, "gray-to-bitonal", "gray-to-bitonal")

    # -- lossless sources (Flate, LZW, ...) ------------------------------------------------------------

    def _from_lossless(
        self,
        obj: Stream,
        w: int,
        h: int,
        bpc: int,
        cs_info: tuple[str, int, pikepdf.Object | None] | None,
        placement: Placement,
        *,
        is_smask: bool,
    ) -> None:
        assert cs_info is not None
        if (w * cs_info[1] * bpc + 7) // 8 * h > _MAX_DECODE_BYTES:
            return
        # The samples and every other candidate are gone before the winner is written (one full-size copy less).
        best = self._lossless_source_best(obj, w, h, bpc, cs_info, placement, is_smask=is_smask)
        if best is not None and best.data is not None:
            self._apply(obj, best, best.technique, placement)

    def _lossless_source_best(
        self,
        obj: Stream,
        w: int,
        h: int,
        bpc: int,
        cs_info: tuple[str, int, pikepdf.Object | None],
        placement: Placement,
        *,
        is_smask: bool,
    ) -> _Best | None:
        d = obj.stream_dict
        kind, n, _base = cs_info
        stride = (w * n * bpc + 7) // 8
        best = _Best(len(obj.read_raw_bytes()))
        samples = _read_samples(obj, stride * h)
        if samples is None:
            return None
        has_decode = d.get("/Decode") is not None
        color_key = isinstance(d.get("/Mask"), Array)
        scale = self._scale_for(placement, w, h)
        consider = best.consider
        # 1. Same samples, better Flate (lossless at every level).
        fl, parms = codecs.flate_best(samples, w, h, n, bpc)
        consider(fl, {"/DecodeParms": Dictionary(parms) if parms else None}, "lossless-flate")
        del fl

        lossy_ok = self.s.lossy and not has_decode and not color_key and bpc == 8 and d.get("/SMask") is None
        lossy_ok_smask = self.s.lossy and is_smask and bpc == 8 and not has_decode
        # 2. An exact palette for RGB images with at most 256 colours (lossless).
        if kind in ("device", "icc") and n == 3 and bpc == 8 and not has_decode and not color_key:
            pal = self._exact_palette(samples, w, h, d.get("/ColorSpace"))
            if pal is not None:
                consider(pal[0], pal[1], "lossless-palette")
            del pal
        # Indexed images are expanded to their base colour space for the lossy variants.
        expanded = w * h * 4 if kind == "indexed" else stride * h
        if (lossy_ok or lossy_ok_smask) and expanded <= _MAX_DECODE_BYTES:
            img = self._decode_samples(samples, w, h, kind, n, d.get("/ColorSpace"))
            if img is not None and lossy_ok and kind != "indexed" and n in (1, 3):
                self._gray_to_bitonal(img, samples, placement, best)
            if img is not None:
                self._lossy_variants(img, d, scale, consider, graphic_only=is_smask, dpi=placement.effective_dpi)
        return best

    def _apply(self, obj: Stream, best: _Best, technique: str, placement: Placement) -> None:
        """Replace the image by ``best`` and record it; all or nothing (an error midway puts the original back)."""
        assert best.data is not None
        snap = _Snapshot.take(obj)
        updates = dict(best.updates)
        parms_obj: Any = updates.pop("/DecodeParms", None)
        try:
            obj.write(best.data, filter=best.filt, decode_parms=parms_obj)
            for k, v in updates.items():
                if v is None:
                    if k in obj.stream_dict:
                        del obj.stream_dict[k]
                else:
                    obj.stream_dict[k] = v
            self._record(obj, technique, placement.pages, snap, len(best.data))
        except BaseException:
            _Snapshot.restore(obj, *snap)
            raise

    def _exact_palette(self, samples: Buffer, w: int, h: int, cs: Any) -> tuple[bytes, dict[str, Any]] | None:
        arr = np.frombuffer(samples, dtype=np.uint8, count=w * h * 3).reshape(-1, 3)
        # Colours of a sample first (photographs are rejected here), then every pixel is looked up in them, a strip
        # at a time; only the few pixels not found are sorted. Avoids sorting (or copying) millions of pixels.
        colours = np.unique(_rgb_keys(arr[:: max(1, len(arr) // 4096)]))
        if len(colours) > 256:
            return None
        for strip in _strips(arr):
            keys = _rgb_keys(strip)
            pos = np.minimum(np.searchsorted(colours, keys), len(colours) - 1)
            missing = colours[pos] != keys
            if missing.any():
                colours = np.union1d(colours, np.unique(keys[missing]))
                if len(colours) > 256:
                    return None
        idx = np.empty(len(arr), dtype=np.uint8)
        step = _STRIP_PIXELS
        for i, strip in enumerate(_strips(arr)):
            idx[i * step : i * step + len(strip)] = np.searchsorted(colours, _rgb_keys(strip))
        palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
        bits = 8 if len(colours) > 16 else 4 if len(colours) > 4 else 2 if len(colours) > 2 else 1
        packed_rows = _pack_bits(idx.reshape(h, w), bits)
        data, parms = codecs.flate_best(packed_rows, w, h, 1, bits)
        indexed = Array([Name.Indexed, cs, len(colours) - 1, pikepdf.String(palette.tobytes())])
        return data, {
            "/ColorSpace": indexed,
            "/BitsPerComponent": bits,
            "/DecodeParms": Dictionary(parms) if parms else None,
        }

    def _decode_samples(self, samples: Buffer, w: int, h: int, kind: str, n: int, cs: Any) -> Image.Image | None:
        if kind == "indexed":
            base = _colorspace_info(cs[1])
            if base is None:
                return None
            bn = base[1]
            pal = _palette_bytes(cs, bn)
            if pal is None:
                return None
            lut = np.frombuffer(pal, dtype=np.uint8).reshape(-1, bn)
            idx = np.frombuffer(samples, dtype=np.uint8, count=w * h).reshape(h, w)
            idx = np.minimum(idx, len(lut) - 1)
            return _pil_from_samples(lut[idx].tobytes(), w, h, bn)
        return _pil_from_samples(samples, w, h, n)

    # -- lossy variants --------------------------------------------------------------------------------

    def _target_colorspace(self, img: Image.Image, d: pikepdf.Object) -> Any:
        """Colour space for a re-encoded image: the original (or the palette's base) when it matches."""
        cs: Any = d.get("/ColorSpace")
        if self.s.grayscale:
            return Name.DeviceGray
        n = {"L": 1, "RGB": 3, "CMYK": 4}[img.mode]
        info = _colorspace_info(cs)
        if info is not None and info[0] == "indexed":
            cs = cs[1]
            info = _colorspace_info(cs)
        if info is not None and info[1] == n:
            return cs
        return {1: Name.DeviceGray, 3: Name.DeviceRGB, 4: Name.DeviceCMYK}[n]

    def _lossy_variants(
        self,
        img: Image.Image,
        d: pikepdf.Object,
        scale: float,
        consider: Callable[..., None],
        *,
        graphic_only: bool,
        source_is_jpeg: bool = False,
        dpi: float | None = None,
    ) -> None:
        """Offer the lossy replacements of ``img`` (decoded samples, displayed at ``dpi`` pixels per inch at
        most, None when unknown) to ``consider``: resampled by ``scale``, as JPEG when photographic, else lossless
        or palette-quantised."""
        s = self.s
        if self.s.grayscale and img.mode != "L":
            img = img.convert("L") if img.mode != "CMYK" else img.convert("RGB").convert("L")
        work = _resample(img, scale) if scale < 1.0 else img
        nw, nh = work.size
        cs = self._target_colorspace(work, d)
        base: dict[str, Any] = {"/Width": nw, "/Height": nh, "/BitsPerComponent": 8, "/ColorSpace": cs, "/Decode": None}
        if graphic_only:
            # Masks: resampled but always lossless (JPEG ringing shows as halos at mask edges).
            if scale < 1.0 or s.grayscale:
                n = len(work.getbands())
                fl, parms = codecs.flate_best(work.tobytes(), nw, nh, n, 8)
                base["/DecodeParms"] = Dictionary(parms) if parms else None
                consider(fl, dict(base), "downsample-lossless")
            return
        photo = source_is_jpeg or _looks_photographic(work, indexed=_is_indexed(d))
        q = s.jpeg_quality
        if photo and q is not None:
            found = self._search_jpeg(img, work, dpi, scale) if s.search is not None and dpi is not None else None
            if found is None and self._quality_ok(img, data := codecs.jpeg(work, q)):
                found = data, work
            if found is not None:
                data, jpeg_work = found
                resampled = jpeg_work.size != img.size
                gain_ok = (not source_is_jpeg) or resampled or s.grayscale
                limit = 1.0 if gain_ok else s.min_jpeg_gain
                tech = "downsample-jpeg" if resampled else ("jpeg-reencode" if source_is_jpeg else "jpeg")
                updates = dict(
                    base, **{"/Width": jpeg_work.size[0], "/Height": jpeg_work.size[1], "/DecodeParms": None}
                )
                if jpeg_work.mode == "CMYK":
                    # Pillow writes Adobe-style inverted CMYK JPEGs; PDF readers need the inverting /Decode.
                    updates["/Decode"] = Array([1, 0] * 4)
                consider(data, updates, tech, Name.DCTDecode, limit)
                del found, data, jpeg_work
        if not photo or not source_is_jpeg:
            # Graphics: stay lossless (resampled if displayed at a high resolution), or a 256-colour palette
            # where the level allows.
            n = len(work.getbands())
            if scale < 1.0 or s.grayscale:
                fl, parms = codecs.flate_best(work.tobytes(), nw, nh, n, 8)
                consider(
                    fl, dict(base, **{"/DecodeParms": Dictionary(parms) if parms else None}), "downsample-lossless"
                )
            if s.quantize and work.mode == "RGB" and not photo:
                q_img = work.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                if self._quality_ok(img, None, candidate=q_img.convert("RGB")):
                    pal = q_img.getpalette() or []
                    ncol = len(pal) // 3
                    idx = q_img.tobytes()
                    fl, parms = codecs.flate_best(idx, nw, nh, 1, 8)
                    indexed = Array([Name.Indexed, cs, ncol - 1, pikepdf.String(bytes(pal[: ncol * 3]))])
                    consider(
                        fl,
                        dict(base, **{"/ColorSpace": indexed, "/DecodeParms": Dictionary(parms) if parms else None}),
                        "quantize-palette",
                    )

    def _search_jpeg(
        self, img: Image.Image, level_work: Image.Image, dpi: float, scale: float
    ) -> tuple[bytes, Image.Image] | None:
        """The smallest JPEG of ``img`` (displayed at ``dpi``) that keeps the search's gate at the size the page
        gate renders it: from the level's resolution (``scale``, ``level_work`` already resampled) down to the
        floor, each at the lowest passing quality from the level's down to the floor. None: none passes."""
        srch = self.s.search
        assert srch is not None
        w, h = img.size
        # As large as in the page render, which is itself at most max_side_px on its long side.
        shown = min(1.0, srch.display_dpi / dpi, srch.max_side_px / max(w, h))
        display = (max(1, round(w * shown)), max(1, round(h * shown)))
        if min(display) < 8:
            return None  # too small on the page for a meaningful comparison: the level's fixed settings
        seen = _Seen(img, display, srch)
        best: tuple[bytes, Image.Image] | None = None
        for factor in _search_scales(dpi, scale, srch.floor_dpi, min(w, h)):
            work = level_work if factor == scale else _resample(img, factor)
            data = self._lowest_passing_quality(work, seen)
            if data is None:
                break  # even the level's quality fails here: a lower resolution would not pass either
            if best is not None and len(data) >= len(best[0]):
                break  # smaller pixels no longer buy smaller files
            best = data, work
        return best

    def _lowest_passing_quality(self, work: Image.Image, seen: _Seen) -> bytes | None:
        """The JPEG of ``work`` at the lowest quality (bisected over the search's steps) that keeps the gate."""
        srch = self.s.search
        assert srch is not None
        assert self.s.jpeg_quality is not None
        steps = _quality_steps(self.s.jpeg_quality, srch.floor_quality)
        passing: bytes | None = None
        lo, hi = 0, len(steps) - 1  # steps[lo] is the highest quality still to try
        while lo <= hi:
            mid = (lo + hi) // 2 if passing is not None else lo  # the level's quality first: most fail nowhere
            data = codecs.jpeg(work, steps[mid])
            if seen.keeps(data):
                passing, lo = data, mid + 1
            else:
                if passing is None:
                    return None
                hi = mid - 1
        return passing

    def _quality_ok(self, original: Image.Image, data: bytes | None, candidate: Image.Image | None = None) -> bool:
        try:
            cand = candidate if candidate is not None else Image.open(io.BytesIO(data or b""))
            cand.load()
        except OSError:
            return False
        orig = original
        if orig.mode == "CMYK":
            orig = orig.convert("RGB")
        if cand.mode == "CMYK":
            cand = cand.convert("RGB")
        return _gray_ssim(orig, cand) >= self.s.image_ssim_min

    # -- lossy sources (JPEG, JPEG 2000) ----------------------------------------------------------------

    def _from_lossy(
        self,
        obj: Stream,
        w: int,
        h: int,
        cs_info: tuple[str, int, pikepdf.Object | None] | None,
        placement: Placement,
        *,
        is_jpx: bool,
    ) -> None:
        d = obj.stream_dict
        if d.get("/Decode") is not None or isinstance(d.get("/Mask"), Array):
            return
        if is_jpx and d.get("/SMaskInData") not in (None, 0):
            return
        n = cs_info[1] if cs_info else 3
        scale = self._scale_for(placement, w, h)
        # libjpeg's draft mode decodes at 1/2, 1/4 or 1/8 directly: the budget applies to what it will decode.
        reduction = _draft_reduction(scale) if not is_jpx else 1
        if -(-w // reduction) * -(-h // reduction) * n > _MAX_DECODE_BYTES:
            return
        raw = obj.read_raw_bytes()
        try:
            img = Image.open(io.BytesIO(raw))
            if not is_jpx and scale < 1.0:
                # libjpeg decodes directly at 1/2, 1/4 or 1/8 size: faster and far less memory.
                img.draft(img.mode, (max(1, int(w * scale)), max(1, int(h * scale))))
            img.load()
        except (OSError, ValueError, Image.DecompressionBombError):
            return
        if img.mode not in ("L", "RGB") or (cs_info is not None and cs_info[0] == "indexed"):
            # CMYK JPEGs (Adobe inverted or not) and exotic JPX modes are left as they are.
            return
        if cs_info is not None and {"L": 1, "RGB": 3}[img.mode] != cs_info[1]:
            return
        eff_scale = scale * w / img.size[0] if img.size[0] != w else scale
        best = _Best(len(raw))
        dpi = placement.effective_dpi
        seen_dpi = dpi * img.size[0] / w if dpi is not None else None  # of the pixels decoded (draft: fewer)
        self._lossy_variants(
            img, d, min(1.0, eff_scale), best.consider, graphic_only=False, source_is_jpeg=True, dpi=seen_dpi
        )
        if best.data is None:
            return
        technique = best.technique
        if is_jpx and technique == "jpeg-reencode":
            technique = "jpx-to-jpeg"
        self._apply(obj, best, technique, placement)


class _Seen:
    """An image as the page gate sees it: resized to its size in the page render (Lanczos: PDFium's downscaling
    keeps about as much fine detail, and as many JPEG artefacts, as Lanczos does, far more than bilinear or box
    filters, so the search's figures follow the page gate's instead of flattering the candidate)."""

    def __init__(self, original: Image.Image, display: tuple[int, int], search: QualitySearch) -> None:
        self.display = display
        self.search = search
        shown = self._shown(original)
        self.gray = np.asarray(shown.convert("L"), dtype=np.uint8)  # float32 a strip at a time
        colour = search.chroma_diff_max is not None and shown.mode != "L"
        self.rgb = np.asarray(shown.convert("RGB")) if colour else None

    def _shown(self, img: Image.Image) -> Image.Image:
        img = img.convert("RGB") if img.mode == "CMYK" else img
        return img if img.size == self.display else img.resize(self.display, Image.Resampling.LANCZOS)

    def keeps(self, data: bytes) -> bool:
        """Whether the JPEG ``data`` keeps the search's gate: SSIM of the luminance, and the block colour."""
        try:
            cand = Image.open(io.BytesIO(data))
            cand.load()
        except OSError:
            return False
        shown = self._shown(cand)
        if ssim_in_strips(self.gray, np.asarray(shown.convert("L"), dtype=np.uint8)) < self.search.ssim_min:
            return False
        if self.rgb is None or self.search.chroma_diff_max is None:
            return True
        diff, ratio = chroma_compare(self.rgb, np.asarray(shown.convert("RGB")))
        lo, hi = self.search.chroma_ratio
        return diff <= self.search.chroma_diff_max and (ratio is None or lo <= ratio <= hi)


def _resample(img: Image.Image, factor: float) -> Image.Image:
    w, h = img.size
    return img.resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.LANCZOS, reducing_gap=3.0
    )


def _search_scales(dpi: float, scale: float, floor_dpi: float, short_side: int) -> list[float]:
    """Resampling factors the search tries, largest first: the level's (``scale``), then the floor's, when it is
    lower by more than 5% and leaves at least 16 px on the short side (intermediate steps cost a search each and,
    on pictures, rarely beat the floor)."""
    floor = floor_dpi / dpi
    if floor < scale * 0.95 and short_side * floor >= 16:
        return [scale, floor]
    return [scale]


def _quality_steps(top: int, floor: int) -> list[int]:
    """JPEG qualities from ``top`` down to ``floor`` in steps of about 12 (bisected: about three encodes)."""
    floor = min(top, floor)
    steps = list(range(top, floor, -12))
    return [*steps, floor] if steps[-1:] != [floor] else steps


def _draft_reduction(scale: float) -> int:
    """The factor Pillow's JPEG draft mode reduces by for a requested ``scale`` (the largest of 8, 4, 2, 1 that
    still leaves at least the requested size)."""
    for factor in (8, 4, 2):
        if scale * factor <= 1.0:
            return factor
    return 1


def _is_indexed(d: pikepdf.Object) -> bool:
    info = _colorspace_info(d.get("/ColorSpace"))
    return info is not None and info[0] == "indexed"


def _looks_photographic(img: Image.Image, *, indexed: bool = False) -> bool:
    """Photographs and scans have many distinct colours; screenshots, charts and diagrams have few. Judged on a
    128x128 thumbnail. A palette image using most of a 256-entry palette is a quantised photograph."""
    thumb = img.convert("RGB") if img.mode == "CMYK" else img
    thumb = thumb.resize((min(128, thumb.size[0]), min(128, thumb.size[1])), Image.Resampling.NEAREST)
    arr = np.asarray(thumb)
    if arr.ndim == 2:
        return len(np.unique(arr)) > 48
    flat = arr.reshape(-1, arr.shape[-1]).astype(np.uint32)
    colours = len(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]))
    return colours > (128 if indexed else 1500)


_STRIP_PIXELS = 1 << 20


def _strips(arr: np.ndarray) -> list[np.ndarray]:
    """Views of ``arr`` (pixels, channels) of ``_STRIP_PIXELS`` pixels each."""
    return [arr[i : i + _STRIP_PIXELS] for i in range(0, len(arr), _STRIP_PIXELS)]


def _rgb_keys(pixels: np.ndarray) -> np.ndarray:
    """One uint32 per RGB pixel (pixels: uint8 (n, 3))."""
    return (pixels[:, 0].astype(np.uint32) << 16) | (pixels[:, 1].astype(np.uint32) << 8) | pixels[:, 2]


# Inflated this many bytes per step into the samples' buffer.
_INFLATE_STEP = 16 << 20


def _read_samples(obj: Stream, need: int) -> bytes | bytearray | None:
    """The first ``need`` bytes of the decoded image, or None when there are fewer. Plain Flate is inflated here,
    straight into one buffer of the final size (qpdf's own decoding briefly holds the data twice); other filters
    are decoded by qpdf."""
    d = obj.stream_dict
    if _filters(d) != [Name.FlateDecode] or d.get("/DecodeParms") is not None:
        data = obj.read_bytes()
        return data[:need] if len(data) >= need else None
    out = bytearray(need)
    z = zlib.decompressobj()
    pending = obj.read_raw_bytes()
    pos = 0
    try:
        while pos < need and pending:
            chunk = z.decompress(pending, min(_INFLATE_STEP, need - pos))
            pending = z.unconsumed_tail
            if not chunk:
                break
            out[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
    except zlib.error:
        return None  # damaged data: left to qpdf's lenient decoding elsewhere, the image stays as it is
    return out if pos == need else None


def _g4_parms(w: int, h: int) -> Dictionary:
    return Dictionary(K=-1, Columns=w, Rows=h, BlackIs1=True)


def _consider_bits(
    best: _Best, packed: Buffer, w: int, h: int, updates: dict[str, Any], g4_technique: str, flate_technique: str
) -> None:
    """Offer packed 1-bit rows to ``best`` as CCITT G4 and as Flate (with ``updates`` to the dictionary)."""
    g4 = codecs.ccitt_g4(packed, w, h)
    if g4 is not None:
        best.consider(g4, dict(updates, **{"/DecodeParms": _g4_parms(w, h)}), g4_technique, Name.CCITTFaxDecode)
    del g4
    fl, parms = codecs.flate_best(packed, w, h, 1, 1)
    best.consider(fl, dict(updates, **{"/DecodeParms": Dictionary(parms) if parms else None}), flate_technique)


def _plain_bitonal(d: pikepdf.Object) -> bool:
    """A black-and-white 1-bit image (DeviceGray or a stencil mask), which may be reduced by averaging."""
    return d.get("/ImageMask") is True or (d.get("/ColorSpace") == Name.DeviceGray and d.get("/BitsPerComponent") == 1)


def _ink_bit(d: pikepdf.Object) -> int:
    """The sample value that paints black (or paints, for a stencil mask): 0 unless /Decode is [1 0]."""
    dec = d.get("/Decode")
    return 1 if isinstance(dec, Array) and len(dec) == 2 and float(dec[0]) == 1.0 else 0


def _pack_bits(idx: np.ndarray, bits: int) -> bytes:
    """Pack palette indices (h, w) into rows of ``bits`` bits per sample, MSB first, rows padded to bytes."""
    if bits == 8:
        return idx.tobytes()
    h, w = idx.shape
    per = 8 // bits
    pad = (-w) % per
    if pad:
        idx = np.pad(idx, ((0, 0), (0, pad)))
    groups = idx.reshape(h, -1, per).astype(np.uint8)
    out = np.zeros(groups.shape[:2], dtype=np.uint8)
    for k in range(per):
        out |= groups[:, :, k] << (8 - bits * (k + 1))
    return out.tobytes()
