"""Image techniques: downsampling by displayed resolution, JPEG re-encoding, better lossless encoding,
palette conversion and quantisation, CCITT G4 for bitonal images. An image is only replaced when the
replacement is smaller; every replacement is recorded so it can be reverted page by page."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name, Stream
from PIL import Image

from . import codecs
from .errors import TOO_COMPLEX, EngineError
from .placements import Placement
from .ssim import ssim

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


@dataclass
class ImageChange:
    objgen: tuple[int, int]
    technique: str
    old_bytes: int
    new_bytes: int
    pages: set[int]
    # What is needed to put the original back (raw data + the stream dictionary as it was).
    raw: bytes = field(repr=False, default=b"")
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


def revert(changes: list[ImageChange], objects: dict[tuple[int, int], Stream]) -> None:
    for ch in changes:
        obj = objects.get(ch.objgen)
        if obj is not None:
            _Snapshot.restore(obj, ch.raw, ch.dict_items)


def _pil_from_samples(samples: bytes, w: int, h: int, n: int) -> Image.Image | None:
    mode = {1: "L", 3: "RGB", 4: "CMYK"}.get(n)
    if mode is None or len(samples) < w * h * n:
        return None
    return Image.frombuffer(mode, (w, h), samples[: w * h * n], "raw", mode, 0, 1)


def _gray_ssim(a: Image.Image, b: Image.Image) -> float:
    """Quality of a replacement: SSIM of the luminance at a common size (at most 600 px on the long side)."""
    w, h = b.size
    scale = min(1.0, 600.0 / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    ga = a.convert("L").resize(size, Image.Resampling.BILINEAR) if a.size != size else a.convert("L")
    gb = b.convert("L").resize(size, Image.Resampling.BILINEAR) if b.size != size else b.convert("L")
    return ssim(np.asarray(ga, dtype=np.float32), np.asarray(gb, dtype=np.float32))


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

    # -- discovery -------------------------------------------------------------------------------------

    def _collect(self) -> tuple[list[Stream], set[tuple[int, int]], set[tuple[int, int]]]:
        images: list[Stream] = []
        smasks: set[tuple[int, int]] = set()
        stencils: set[tuple[int, int]] = set()
        for obj in self.pdf.objects:
            if not isinstance(obj, Stream) or obj.stream_dict.get("/Subtype") != Name.Image:
                continue
            d = obj.stream_dict
            w, h = int(d.get("/Width", 0) or 0), int(d.get("/Height", 0) or 0)
            if w * h > self.max_image_pixels:
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

    def redo(self, changes: list[ImageChange], settings: ImageSettings) -> None:
        """Put the originals of ``changes`` back and process those images again with gentler settings."""
        revert(changes, self.objects)
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
        revert(changes, self.objects)
        gone = {id(ch) for ch in changes}
        self.changes = [ch for ch in self.changes if id(ch) not in gone]

    def _record(
        self, obj: Stream, technique: str, pages: set[int], snap: tuple[bytes, dict[str, pikepdf.Object]]
    ) -> None:
        new_len = len(obj.read_raw_bytes())
        self.changes.append(
            ImageChange(obj.objgen, technique, len(snap[0]), new_len, set(pages), raw=snap[0], dict_items=snap[1])
        )

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
            self._bitonal(obj, filters, w, h, placement)
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

    def _bitonal(self, obj: Stream, filters: list[pikepdf.Object], w: int, h: int, placement: Placement) -> None:
        """1-bit images stay 1-bit: CCITT G4 (or better Flate) when smaller; G4/JBIG2 data is left as is."""
        if not all(f in _LOSSLESS_FILTERS for f in filters):
            return
        samples = obj.read_bytes()
        stride = (w + 7) // 8
        if len(samples) < stride * h:
            return
        samples = samples[: stride * h]
        raw_len = len(obj.read_raw_bytes())
        g4 = codecs.ccitt_g4(samples, w, h)
        fl, parms = codecs.flate_best(samples, w, h, 1, 1)
        snap = _Snapshot.take(obj)
        if g4 is not None and len(g4) < min(len(fl), raw_len):
            obj.write(
                g4,
                filter=Name.CCITTFaxDecode,
                decode_parms=Dictionary(K=-1, Columns=w, Rows=h, BlackIs1=True),
            )
            self._record(obj, "bitonal-ccitt-g4", placement.pages, snap)
        elif len(fl) < raw_len:
            obj.write(fl, filter=Name.FlateDecode, decode_parms=Dictionary(parms) if parms else None)
            self._record(obj, "lossless-flate", placement.pages, snap)

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
        d = obj.stream_dict
        kind, n, _base = cs_info
        raw_len = len(obj.read_raw_bytes())
        stride = (w * n * bpc + 7) // 8
        if stride * h > _MAX_DECODE_BYTES:
            return
        samples = obj.read_bytes()
        if len(samples) < stride * h:
            return
        samples = samples[: stride * h]
        has_decode = d.get("/Decode") is not None
        color_key = isinstance(d.get("/Mask"), Array)
        scale = self._scale_for(placement, w, h)
        best = _Best(raw_len)
        consider = best.consider
        # 1. Same samples, better Flate (lossless at every level).
        fl, parms = codecs.flate_best(samples, w, h, n, bpc)
        consider(fl, {"/DecodeParms": Dictionary(parms) if parms else None}, "lossless-flate")

        lossy_ok = self.s.lossy and not has_decode and not color_key and bpc == 8 and d.get("/SMask") is None
        lossy_ok_smask = self.s.lossy and is_smask and bpc == 8 and not has_decode
        # 2. An exact palette for RGB images with at most 256 colours (lossless).
        if kind in ("device", "icc") and n == 3 and bpc == 8 and not has_decode and not color_key:
            pal = self._exact_palette(samples, w, h, d.get("/ColorSpace"))
            if pal is not None:
                consider(pal[0], pal[1], "lossless-palette")
        if lossy_ok or lossy_ok_smask:
            img = self._decode_samples(samples, w, h, kind, n, d.get("/ColorSpace"))
            if img is not None:
                self._lossy_variants(img, d, scale, consider, graphic_only=is_smask)
        if best.data is not None:
            self._apply(obj, best, best.technique, placement)

    def _apply(self, obj: Stream, best: _Best, technique: str, placement: Placement) -> None:
        assert best.data is not None
        snap = _Snapshot.take(obj)
        updates = dict(best.updates)
        parms_obj: Any = updates.pop("/DecodeParms", None)
        obj.write(best.data, filter=best.filt, decode_parms=parms_obj)
        for k, v in updates.items():
            if v is None:
                if k in obj.stream_dict:
                    del obj.stream_dict[k]
            else:
                obj.stream_dict[k] = v
        self._record(obj, technique, placement.pages, snap)

    def _exact_palette(self, samples: bytes, w: int, h: int, cs: Any) -> tuple[bytes, dict[str, Any]] | None:
        arr = np.frombuffer(samples, dtype=np.uint8).reshape(-1, 3)
        packed = (arr[:, 0].astype(np.uint32) << 16) | (arr[:, 1].astype(np.uint32) << 8) | arr[:, 2]
        # Colours of a sample first (photographs are rejected here), then every pixel is looked up in them; only
        # the few pixels not found are sorted. Avoids sorting millions of pixels.
        colours = np.unique(packed[:: max(1, len(packed) // 4096)])
        if len(colours) > 256:
            return None
        pos = np.minimum(np.searchsorted(colours, packed), len(colours) - 1)
        missing = colours[pos] != packed
        if missing.any():
            colours = np.union1d(colours, np.unique(packed[missing]))
            if len(colours) > 256:
                return None
            pos = np.searchsorted(colours, packed)
        index = pos
        palette = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.uint8)
        bits = 8 if len(colours) > 16 else 4 if len(colours) > 4 else 2 if len(colours) > 2 else 1
        idx = index.astype(np.uint8).reshape(h, w)
        packed_rows = _pack_bits(idx, bits)
        data, parms = codecs.flate_best(packed_rows, w, h, 1, bits)
        indexed = Array([Name.Indexed, cs, len(colours) - 1, pikepdf.String(palette.tobytes())])
        return data, {
            "/ColorSpace": indexed,
            "/BitsPerComponent": bits,
            "/DecodeParms": Dictionary(parms) if parms else None,
        }

    def _decode_samples(self, samples: bytes, w: int, h: int, kind: str, n: int, cs: Any) -> Image.Image | None:
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
    ) -> None:
        s = self.s
        w, h = img.size
        if self.s.grayscale and img.mode != "L":
            img = img.convert("L") if img.mode != "CMYK" else img.convert("RGB").convert("L")
        work = img
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            work = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
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
            data = codecs.jpeg(work, q)
            gain_ok = (not source_is_jpeg) or scale < 1.0 or s.grayscale
            limit = 1.0 if gain_ok else s.min_jpeg_gain
            if self._quality_ok(img, data):
                tech = "downsample-jpeg" if scale < 1.0 else ("jpeg-reencode" if source_is_jpeg else "jpeg")
                updates = dict(base, **{"/DecodeParms": None})
                if work.mode == "CMYK":
                    # Pillow writes Adobe-style inverted CMYK JPEGs; PDF readers need the inverting /Decode.
                    updates["/Decode"] = Array([1, 0] * 4)
                consider(data, updates, tech, Name.DCTDecode, limit)
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
        if w * h * n > _MAX_DECODE_BYTES:
            return
        raw = obj.read_raw_bytes()
        scale = self._scale_for(placement, w, h)
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
        self._lossy_variants(img, d, min(1.0, eff_scale), best.consider, graphic_only=False, source_is_jpeg=True)
        if best.data is None:
            return
        technique = best.technique
        if is_jpx and technique == "jpeg-reencode":
            technique = "jpx-to-jpeg"
        self._apply(obj, best, technique, placement)


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
