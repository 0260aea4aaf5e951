"""LibreOffice exports (``soffice --headless --convert-to pdf``) of Writer documents and Impress presentations
with photographs (JPEG and PNG, some above the export's 300-dpi reduction) and vector charts (matplotlib SVG),
tables and headings, written as flat ODF XML, exported with the default, lossless, reduced, PDF/A and tagged
settings. A page break before every page's content makes the page count exact."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .common import Case, Context, Family, paragraph, title

CONVERT_TIMEOUT = 1200.0
NAMESPACES = " ".join(
    f'xmlns:{k}="{v}"'
    for k, v in {
        "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
        "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
        "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
        "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
        "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
        "fo": "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0",
        "svg": "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0",
        "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
        "xlink": "http://www.w3.org/1999/xlink",
    }.items()
)
# PDF export settings (LibreOffice's JSON filter options); "default" is the plain conversion.
EXPORTS: dict[str, dict[str, object]] = {
    "default": {},
    "lossless": {"UseLosslessCompression": True},
    "reduced": {"Quality": 50, "ReduceImageResolution": True, "MaxImageResolution": 150},
    "pdfa": {"SelectPdfVersion": 2},
    "tagged": {"UseTaggedPDF": True, "ExportBookmarks": True},
}


@dataclass(frozen=True)
class OfficeSpec:
    app: str  # writer | impress
    pages: int
    image_format: str  # JPEG | PNG
    photo_px: int  # width of each photograph in pixels
    export: str

    @property
    def name(self) -> str:
        return f"{self.app}-{self.pages}p-{self.image_format.lower()}{self.photo_px}-{self.export}"


def photograph(width: int, rng: np.random.Generator) -> Image.Image:
    """A landscape-like picture: sky gradient, sun, mountain ridges and grain."""
    height = width * 2 // 3
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.concatenate([90 + 100 * y, 140 + 80 * y, 230 - 40 * y], axis=2) * np.ones((1, width, 1))
    image = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    sun = rng.uniform(0.1, 0.9) * width
    draw.ellipse([sun - width / 16, height / 8, sun + width / 16, height / 8 + width / 8], fill=(250, 220, 120))
    for layer in range(3):
        ridge = height * (0.45 + 0.15 * layer) + np.cumsum(rng.normal(0, height / 60, 64))
        points = [(x * width / 63, float(r)) for x, r in enumerate(ridge)] + [(width, height), (0, height)]
        shade = 60 + 40 * layer
        draw.polygon(points, fill=(shade // 2, shade, shade // 2 + 20))
    grain = rng.normal(0, 7, (height, width, 3))
    return Image.fromarray((np.asarray(image) + grain).clip(0, 255).astype(np.uint8))


def _image_data(image: Image.Image, image_format: str) -> str:
    buf = io.BytesIO()
    image.save(buf, image_format, **({"quality": 92} if image_format == "JPEG" else {}))
    return base64.b64encode(buf.getvalue()).decode()


def chart_svg(rng: np.random.Generator) -> str:
    """A bar-and-line chart as SVG (matplotlib), base64."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    x = np.arange(12)
    ax.bar(x, rng.uniform(20, 80, 12), color="#4c72b0")
    ax.plot(x, rng.uniform(20, 80, 12), color="#dd8452", marker="o")
    ax.set_title(title(rng, 3))
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return base64.b64encode(buf.getvalue()).decode()


def _frame(data: str, mime: str, width_cm: float, height_cm: float, extra: str = "") -> str:
    return (
        f'<draw:frame svg:width="{width_cm}cm" svg:height="{height_cm}cm" {extra}>'
        f'<draw:image draw:mime-type="{mime}"><office:binary-data>{data}</office:binary-data></draw:image>'
        "</draw:frame>"
    )


def _table(rng: np.random.Generator) -> str:
    rows = "".join(
        "<table:table-row>"
        + "".join(f"<table:table-cell><text:p>{v:.2f}</text:p></table:table-cell>" for v in rng.normal(100, 30, 4))
        + "</table:table-row>"
        for _ in range(4)
    )
    return f'<table:table><table:table-column table:number-columns-repeated="4"/>{rows}</table:table>'


def writer_document(spec: OfficeSpec, rng: np.random.Generator) -> str:
    body = []
    for page in range(spec.pages):
        style = ' text:style-name="Break"' if page else ""
        photo = _image_data(photograph(spec.photo_px, rng), spec.image_format)
        visual = (
            _frame(photo, f"image/{spec.image_format.lower()}", 14, 9.33, 'text:anchor-type="as-char"')
            if page % 2 == 0
            else _frame(chart_svg(rng), "image/svg+xml", 15, 8, 'text:anchor-type="as-char"')
        )
        body.append(
            f'<text:h{style} text:outline-level="1">{escape(title(rng))}</text:h>'
            f"<text:p>{escape(paragraph(rng, 4))}</text:p><text:p>{visual}</text:p>"
            f"<text:p>Figure {page + 1}. {escape(title(rng, 3))}</text:p>{_table(rng)}"
        )
    styles = (
        '<office:automatic-styles><style:style style:name="Break" style:family="paragraph">'
        '<style:paragraph-properties fo:break-before="page"/></style:style></office:automatic-styles>'
    )
    return _document("text", styles, "<office:text>" + "".join(body) + "</office:text>")


def impress_document(spec: OfficeSpec, rng: np.random.Generator) -> str:
    slides = []
    for slide in range(spec.pages):
        photo = _image_data(photograph(spec.photo_px, rng), spec.image_format)
        slides.append(
            f'<draw:page draw:name="slide{slide + 1}" draw:master-page-name="Default">'
            '<draw:frame svg:x="1cm" svg:y="0.6cm" svg:width="26cm" svg:height="2cm"><draw:text-box>'
            f"<text:p>{escape(title(rng))}</text:p></draw:text-box></draw:frame>"
            + _frame(photo, f"image/{spec.image_format.lower()}", 12, 8, 'svg:x="1cm" svg:y="3cm"')
            + _frame(chart_svg(rng), "image/svg+xml", 13, 7, 'svg:x="14cm" svg:y="3cm"')
            + '<draw:frame svg:x="1cm" svg:y="11.5cm" svg:width="26cm" svg:height="3cm"><draw:text-box>'
            f"<text:p>{escape(paragraph(rng, 2))}</text:p></draw:text-box></draw:frame></draw:page>"
        )
    styles = (
        '<office:automatic-styles><style:page-layout style:name="Screen"><style:page-layout-properties '
        'fo:page-width="28cm" fo:page-height="15.75cm" fo:margin-top="0cm" fo:margin-bottom="0cm" '
        'fo:margin-left="0cm" fo:margin-right="0cm"/></style:page-layout></office:automatic-styles>'
        '<office:master-styles><style:master-page style:name="Default" style:page-layout-name="Screen"/>'
        "</office:master-styles>"
    )
    return _document("presentation", styles, "<office:presentation>" + "".join(slides) + "</office:presentation>")


def _document(kind: str, styles: str, body: str) -> str:
    mime = f"application/vnd.oasis.opendocument.{kind}"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document {NAMESPACES} office:version="1.3" '
        f'office:mimetype="{mime}">{styles}<office:body>{body}</office:body></office:document>\n'
    )


def convert(sources: list[Path], app: str, export: str, out: Path, profile: Path) -> None:
    """One soffice run for every source of one application and export setting (its start costs seconds)."""
    options = {
        k: {"type": "boolean" if isinstance(v, bool) else "long", "value": str(v).lower()}
        for k, v in EXPORTS[export].items()
    }
    target = f"pdf:{app}_pdf_Export:{json.dumps(options)}" if options else "pdf"
    argv = [
        "soffice",
        f"-env:UserInstallation={profile.as_uri()}",
        "--headless",
        "--convert-to",
        target,
        "--outdir",
        str(out),
        *map(str, sources),
    ]
    subprocess.run(argv, capture_output=True, timeout=CONVERT_TIMEOUT, check=True)


def specs(quick: bool) -> list[OfficeSpec]:
    if quick:
        return [OfficeSpec("writer", 2, "JPEG", 900, "default"), OfficeSpec("impress", 2, "PNG", 700, "default")]
    plan = [
        OfficeSpec("writer", p, f, px, e)
        for p in (1, 4, 12)
        for f, px in (("JPEG", 1600), ("PNG", 1000))
        for e in ("default", "lossless", "reduced")
    ]
    plan += [OfficeSpec("writer", 6, "JPEG", 3600, e) for e in ("default", "pdfa", "tagged")]
    plan += [
        OfficeSpec("impress", p, f, px, e)
        for p in (3, 10)
        for f, px in (("JPEG", 2000), ("PNG", 1200))
        for e in ("default", "lossless", "reduced")
    ]
    plan += [OfficeSpec("impress", 5, "JPEG", 2400, e) for e in ("pdfa", "tagged")]
    return plan


def build(ctx: Context) -> list[Case]:
    groups: dict[tuple[str, str], list[Path]] = {}
    cases = []
    for spec in specs(ctx.quick):
        rng = ctx.rng("office", spec.name)
        maker, suffix = (writer_document, ".fodt") if spec.app == "writer" else (impress_document, ".fodp")
        source = ctx.work / f"office__{spec.name}{suffix}"
        source.write_text(maker(spec, rng))
        groups.setdefault((spec.app, spec.export), []).append(source)
        cases.append(Case("office", spec.name, ctx.path("office", spec.name), spec.pages))
    for (app, export), sources in groups.items():
        convert(sources, app, export, ctx.out, ctx.work / "profile")
    missing = [c.path.name for c in cases if not c.path.exists()]
    if missing:
        raise RuntimeError(f"soffice wrote no PDF for {', '.join(missing)}")
    return cases


FAMILY = Family(
    "office",
    "LibreOffice Writer and Impress exports with photos and vector charts",
    build,
    executables=("soffice",),
    modules=("matplotlib",),
)
