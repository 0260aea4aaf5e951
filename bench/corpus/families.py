"""Every family, in build order (the ones that need only Python packages first)."""

from __future__ import annotations

from . import bombs, damaged, forms, latex, long, office, plots, scans, signed, vector
from .common import Family

FAMILIES: tuple[Family, ...] = (
    scans.FAMILY,
    plots.FAMILY,
    vector.FAMILY,
    forms.FAMILY,
    long.FAMILY,
    damaged.FAMILY,
    signed.FAMILY,
    bombs.FAMILY,
    latex.FAMILY,
    office.FAMILY,
)
