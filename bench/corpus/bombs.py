"""Decompression bombs and oversized objects in otherwise ordinary documents: Flate streams that inflate a
thousandfold (unreferenced, in a page's content, as an image, through two filters, raw deflate without its zlib
header), and a document of many tiny objects."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name

from .common import Case, Context, Family
from .damaged import PAGES, base_document

MIB = 1 << 20


def _deflated_zeros(size: int, *, wbits: int = 15) -> bytes:
    """``size`` zero bytes compressed, one MiB at a time (never held inflated)."""
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunk = bytes(MIB)
    return b"".join(z.compress(chunk) for _ in range(size // MIB)) + z.compress(bytes(size % MIB)) + z.flush()


def _raw_stream(pdf: pikepdf.Pdf, data: bytes, filters: Name | Array = Name.FlateDecode) -> pikepdf.Object:
    stream = pikepdf.Stream(pdf, b"")
    stream.write(data, filter=filters)
    return pdf.make_indirect(stream)


def unreferenced(pdf: pikepdf.Pdf, size: int) -> None:
    pdf.Root.Junk = _raw_stream(pdf, _deflated_zeros(size))


def content(pdf: pikepdf.Pdf, size: int) -> None:
    """A page content stream of ``size`` bytes of ``q Q`` pairs (valid, draws nothing, costs a parse)."""
    z = zlib.compressobj(9)
    chunk = b"q Q " * (MIB // 4)
    data = b"".join(z.compress(chunk) for _ in range(size // MIB)) + z.flush()
    page = pdf.pages[1].obj
    page.Contents = Array([page.Contents, _raw_stream(pdf, data)])


def image(pdf: pikepdf.Pdf, size: int) -> None:
    """A white gray image of ``size`` pixels shown on page 1."""
    side = int(np.sqrt(size))
    img = _raw_stream(pdf, _deflated_zeros(side * side))
    img.stream_dict.update(
        {"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": side, "/Height": side}
        | {"/BitsPerComponent": 8, "/ColorSpace": Name.DeviceGray, "/Decode": Array([1, 0])}
    )
    page = pdf.pages[0].obj
    page.Resources.XObject.Bomb = img
    page.Contents = Array([page.Contents, pdf.make_stream(b"q 100 0 0 100 450 650 cm /Bomb Do Q")])


def nested(pdf: pikepdf.Pdf, size: int) -> None:
    """Zeros through Flate twice: the outer layer is small, the inner one a bomb again."""
    inner = _deflated_zeros(size)
    pdf.Root.Junk = _raw_stream(pdf, zlib.compress(inner, 9), Array([Name.FlateDecode, Name.FlateDecode]))


def raw_deflate(pdf: pikepdf.Pdf, size: int) -> None:
    pdf.Root.Junk = _raw_stream(pdf, _deflated_zeros(size, wbits=-15))


def many_objects(pdf: pikepdf.Pdf, size: int) -> None:
    """``size // 1000`` tiny indirect objects hanging off the catalog."""
    pdf.Root.Junk = Array([pdf.make_indirect(Dictionary(N=k)) for k in range(size // 1000)])


BOMBS: dict[str, Callable[[pikepdf.Pdf, int], None]] = {
    "flate-unreferenced": unreferenced,
    "flate-content": content,
    "flate-image": image,
    "flate-nested": nested,
    "raw-deflate": raw_deflate,
    "many-objects": many_objects,
}


def bomb_pdf(path: Path, rng: np.random.Generator, bomb: Callable[[pikepdf.Pdf, int], None], size: int) -> Path:
    base_document(path, rng)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        bomb(pdf, size)
        pdf.save(path, deterministic_id=True, compress_streams=False)
    return path


def build(ctx: Context) -> list[Case]:
    if ctx.quick:
        plan = [("flate-unreferenced", 16 * MIB), ("flate-image", 4 * MIB)]
    else:
        plan = [(name, size * MIB) for name in BOMBS for size in (64, 1024)]
        plan = [(n, s) for n, s in plan if n != "many-objects"] + [("many-objects", 200 * MIB)]
    cases = []
    for name, size in plan:
        case = f"{name}-{size // MIB}MiB"
        path = bomb_pdf(ctx.path("bombs", case), ctx.rng("bombs", case), BOMBS[name], size)
        cases.append(Case("bombs", case, path, PAGES, PAGES))
    return cases


FAMILY = Family("bombs", "decompression bombs (64 MiB and 1 GiB inflated) and object floods", build)
