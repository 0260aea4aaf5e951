"""PDF compression engine: input file + options -> output file + report (no gRPC here).

from services.compressor.engine import compress, compress_isolated, CompressOptions, Limits, EngineError
report = compress_isolated(Path("in.pdf"), Path("out.pdf"), CompressOptions(level="medium"))
"""

from .errors import EngineError
from .isolation import compress_isolated, compress_isolated_json
from .options import LEVEL_NAMES, LEVELS, CompressOptions, Limits
from .pipeline import compress
from .report import Report, TechniqueSaving, Verification

__all__ = [
    "LEVELS",
    "LEVEL_NAMES",
    "CompressOptions",
    "EngineError",
    "Limits",
    "Report",
    "TechniqueSaving",
    "Verification",
    "compress",
    "compress_isolated",
    "compress_isolated_json",
]
