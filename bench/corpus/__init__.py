"""A generated development corpus: a few hundred PDFs of every kind the engine meets, built from nothing.

    python -m bench.corpus [--out DIR] [--kinds scans,charts,...] [--seed N] [--quick]

One module per family (LaTeX, LibreOffice exports, scans, vector charts, forms, long documents, damaged/signed/
bomb cases), each writing ``<family>__<case>.pdf`` into the output folder (default ``.data/generated-corpus/``,
outside version control) plus ``manifest.json`` listing every file with its family and page count. A family whose
tool (pdflatex, lualatex, soffice, matplotlib, reportlab) is missing is skipped with a message.
"""
