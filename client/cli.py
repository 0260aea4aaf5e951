"""`pdfsmaller upload | status | download`: the service from the command line.

With the engine installed (a development checkout), `pdfsmaller compress` also runs it
locally (services/compressor/cli.py); the client itself needs nothing but the standard library
(libs/compression.py, which defines the options' flags, loads nothing else).

The server and key come from --server / --api-key or PDFSMALLER_URL /
PDFSMALLER_API_KEY. Failures exit non-zero and print the stable reason code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.api import ApiClient, ApiError
from libs import compression

COMMANDS = ("upload", "status", "download")


def add_commands(sub: Any) -> None:
    """Add the client commands to the `pdfsmaller` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("PDFSMALLER_URL", "http://127.0.0.1:8080"))
    common.add_argument("--api-key", default=os.environ.get("PDFSMALLER_API_KEY", ""))
    common.add_argument("--json", action="store_true", help="print the job as JSON")

    upload = sub.add_parser("upload", parents=[common], help="upload a PDF to the service and create a job")
    upload.add_argument("input", type=Path)
    compression.add_flags(upload)
    upload.add_argument("--request-id", default="", help="retrying with the same id returns the same job")
    upload.add_argument("--wait", action="store_true", help="wait until the job is finished")
    upload.add_argument("-o", "--output", type=Path, help="wait, then download the result here")

    status = sub.add_parser("status", parents=[common], help="show a job")
    status.add_argument("job_id")
    status.add_argument("--wait", action="store_true", help="wait until the job is finished")

    download = sub.add_parser("download", parents=[common], help="download a job's result")
    download.add_argument("job_id")
    download.add_argument("-o", "--output", type=Path, required=True)
    for command in (upload, status, download):
        command.set_defaults(run=run)


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job))
        return
    line = f"{job['id']}  {job['state'].removeprefix('JOB_STATE_')}"
    if job.get("output_size_bytes") and job["state"] == "JOB_STATE_SUCCEEDED":
        line += f"  {int(job['input_size_bytes']):,} -> {int(job['output_size_bytes']):,} bytes"
        line += f" ({job.get('size_ratio', 0):.1%})"
        if job.get("kept_original"):
            line += f"  returned unchanged: {job.get('kept_original_reason', '')}"
    elif job.get("error", {}).get("reason"):
        line += f"  {job['error']['reason']}: {job['error'].get('message', '')}"
    elif job["state"] == "JOB_STATE_RUNNING":
        line += f"  {job.get('progress_percent', 0)}%"
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    client = ApiClient(args.server, args.api_key)
    try:
        if args.command == "upload":
            job = client.upload(args.input, **compression.flag_values(args), request_id=args.request_id)
            if args.wait or args.output:
                job = client.wait(job["id"])
            if args.output and job["state"] == "JOB_STATE_SUCCEEDED":
                client.download(job["id"], args.output)
        elif args.command == "status":
            job = client.wait(args.job_id) if args.wait else client.job(args.job_id)
        else:
            client.download(args.job_id, args.output)
            print(args.output)
            return 0
    except ApiError as error:
        print(f"error: {error.reason or error.status}: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _show(job, args.json)
    return 0 if job["state"] not in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED") else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The `pdfsmaller` console script."""
    parser = argparse.ArgumentParser(prog="pdfsmaller", description="Make PDF files smaller, verified.")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from services.compressor.cli import add_compress_command
    except ImportError:  # a client-only install: no local engine
        pass
    else:
        add_compress_command(sub)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
