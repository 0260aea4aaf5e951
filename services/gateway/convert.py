"""Translation between the public API's messages and the jobs service's."""

from __future__ import annotations

from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

from libs.errors import InvalidArgument

LEVELS: dict[str, int] = {
    "lossless": jobs.COMPRESSION_LEVEL_LOSSLESS,
    "low": jobs.COMPRESSION_LEVEL_LOW,
    "medium": jobs.COMPRESSION_LEVEL_MEDIUM,
    "high": jobs.COMPRESSION_LEVEL_HIGH,
    "maximum": jobs.COMPRESSION_LEVEL_MAXIMUM,
}
LEVEL_NAMES = {value: name for name, value in LEVELS.items()}
DEFAULT_LEVEL = "medium"


def parse_options(request: public.CreateJobRequest) -> jobs.CompressionOptions:
    """The job's compression options from the upload's, validated."""
    name = (request.level or DEFAULT_LEVEL).strip().lower()
    if name not in LEVELS:
        raise InvalidArgument("INVALID_LEVEL", f"level must be one of {', '.join(LEVELS)}")
    if not 0 <= request.image_quality <= 100:
        raise InvalidArgument("INVALID_IMAGE_QUALITY", "image_quality must be 1-100 (0 for the level's default)")
    if request.max_image_dpi and not 10 <= request.max_image_dpi <= 2400:
        raise InvalidArgument("INVALID_MAX_IMAGE_DPI", "max_image_dpi must be 10-2400 (0 for the level's)")
    if request.target_size_bytes < 0:
        raise InvalidArgument("INVALID_TARGET_SIZE", "target_size_bytes must not be negative")
    return jobs.CompressionOptions(
        level=LEVELS[name],  # type: ignore[arg-type]
        image_quality=request.image_quality,
        max_image_dpi=request.max_image_dpi,
        grayscale=request.grayscale,
        remove_metadata=request.remove_metadata,
        linearize=request.linearize,
        target_size_bytes=request.target_size_bytes,
        allow_signature_break=request.allow_signature_break,
    )


def to_public(job: jobs.Job) -> public.Job:
    out = public.Job(
        name=f"jobs/{job.id}",
        id=job.id,
        state=int(job.state),  # type: ignore[arg-type]  # the two JobState enums share their numbers
        filename=job.filename,
        level=LEVEL_NAMES.get(job.options.level, DEFAULT_LEVEL),
        image_quality=job.options.image_quality,
        max_image_dpi=job.options.max_image_dpi,
        grayscale=job.options.grayscale,
        remove_metadata=job.options.remove_metadata,
        linearize=job.options.linearize,
        target_size_bytes=job.options.target_size_bytes,
        allow_signature_break=job.options.allow_signature_break,
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
    if job.state == jobs.JOB_STATE_SUCCEEDED:
        out.result_uri = f"/v1/jobs/{job.id}/result"
        if job.input_size_bytes:
            out.size_ratio = round(job.output_size_bytes / job.input_size_bytes, 4)
    return out


def download_name(filename: str) -> str:
    """`report.pdf` -> `report-smaller.pdf`; the name is only ever a header value."""
    stem = filename[:-4] if filename.lower().endswith(".pdf") else filename
    return f"{stem or 'document'}-smaller.pdf"
