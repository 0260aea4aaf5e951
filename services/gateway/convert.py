"""Translation between the public API's messages and the jobs service's."""

from __future__ import annotations

from google.protobuf import struct_pb2
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

from libs import compression


def parse_options(request: public.CreateJobRequest) -> jobs.CompressionOptions:
    """The job's compression options from the upload's, validated (libs/compression.py)."""
    return compression.options_from_public(request)


def to_public(job: jobs.Job) -> public.Job:
    out = public.Job(
        name=f"jobs/{job.id}",
        id=job.id,
        state=int(job.state),  # type: ignore[arg-type]  # the two JobState enums share their numbers
        filename=job.filename,
        **compression.values_of(job.options),
        input_size_bytes=job.input_size_bytes,
        input_sha256=job.input_sha256,
        output_size_bytes=job.output_size_bytes,
        output_sha256=job.output_sha256,
        progress_percent=job.progress_percent,
    )
    for field in ("create_time", "update_time", "expire_time"):
        if job.HasField(field):
            getattr(out, field).CopyFrom(getattr(job, field))
    if job.HasField("error") and job.error.reason:
        out.error.reason = job.error.reason
        out.error.message = job.error.message
    if job.HasField("report"):
        out.report.CopyFrom(job.report)
        _copy_kept_original(job.report, out)
    if job.state == jobs.JOB_STATE_SUCCEEDED:
        out.result_uri = f"/v1/jobs/{job.id}/result"
        if job.input_size_bytes:
            out.size_ratio = round(job.output_size_bytes / job.input_size_bytes, 4)
    return out


def _copy_kept_original(report: struct_pb2.Struct, out: public.Job) -> None:
    """The report's answer to "is the result my own file, and why", as typed fields of the Job."""
    fields = report.fields
    if "kept_original" in fields and fields["kept_original"].bool_value:
        out.kept_original = True
        reason = fields.get("kept_original_reason")
        out.kept_original_reason = reason.string_value if reason is not None else ""


def download_name(filename: str) -> str:
    """`report.pdf` -> `report-smaller.pdf`; the name is only ever a header value."""
    stem = filename[:-4] if filename.lower().endswith(".pdf") else filename
    return f"{stem or 'document'}-smaller.pdf"
