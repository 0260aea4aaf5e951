"""Benchmark of the compression engine against Ghostscript, qpdf and OCRmyPDF (``make bench``)."""
