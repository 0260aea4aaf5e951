"""pdfsmaller-ops: the operator's command for backups, restores, recovery tests and smoke tests.

Run-time code (the image carries it, for the Kubernetes CronJobs), so it imports only libs/,
services/ and what requirements.in installs. `ops/cli.py` is the entry point; each subcommand is
one module that registers itself there.
"""
