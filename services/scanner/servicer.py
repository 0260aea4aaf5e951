"""The ScannerService servicer: storage -> clamd INSTREAM + PDF structure report.

One pass over the object: each chunk from storage goes to clamd and to a
temporary spool file (the structure check needs random access), so memory
stays bounded whatever the size. Fails closed: with clamd configured, any
clamd failure is UNAVAILABLE / CLAMD_UNAVAILABLE, never a clean verdict; a
structure check that could not finish is INVALID_ARGUMENT / PDF_CHECK_INCOMPLETE
(or, by policy, a report with every kind of active content present).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2 as pb
from pdfsmaller.scanner.v1 import scanner_service_pb2_grpc as pb_grpc
from pdfsmaller.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from libs.errors import InvalidArgument, Unavailable, from_rpc
from services.scanner.clamd import ClamdClient, ClamdError, InstreamSession, ScanResult
from services.scanner.opening_check import OpeningCheck
from services.scanner.pdf_checks import (
    AttachmentsTooLargeError,
    IncompleteCheckPolicy,
    PdfReport,
    assume_active_content,
)

log = logging.getLogger(__name__)

DOMAIN = "scanner.pdfsmaller"
# (the spooled file, where to write decoded attachments or None) -> report
PdfInspector = Callable[[Path, Path | None], PdfReport]
# the spooled file -> the compressor's reason for refusing it at opening, or "" (opening_check.py)
OpeningInspector = Callable[[Path], str]
ATTACHMENT_CHUNK_BYTES = 1024 * 1024


def _clamd_unavailable() -> Unavailable:
    return Unavailable(
        "CLAMD_UNAVAILABLE", "the malware scanner is unavailable; the file was not accepted, retry later", domain=DOMAIN
    )


def _qpdf_could_not_open(report: PdfReport) -> bool:
    """The structure check's qpdf could not open the file (a password, or no structure it parses): the only
    files the compressor's opening may refuse at once, though it reads some of them with other readers."""
    return not report.incomplete and (report.encrypted or not report.is_pdf)


def only_test_signatures(version: str) -> bool:
    """clamd's VERSION names the official database ("ClamAV 1.4.6/27512/<date>"); custom signatures add nothing."""
    return "/" not in version


class ScannerServicer(pb_grpc.ScannerServiceServicer):
    def __init__(
        self,
        storage: storage_service_pb2_grpc.StorageServiceStub,
        clamd: ClamdClient | None,
        inspect_pdf: PdfInspector,
        registry: CollectorRegistry,
        *,
        storage_timeout_seconds: float = 300.0,
        incomplete_check: IncompleteCheckPolicy = IncompleteCheckPolicy.REFUSE,
        opening_failure: OpeningInspector | None = None,
    ) -> None:
        self._storage = storage
        self._clamd = clamd
        self._inspect_pdf = inspect_pdf
        self._opening_failure = opening_failure if opening_failure is not None else OpeningCheck()
        self._incomplete_check = incomplete_check
        self._storage_timeout = storage_timeout_seconds
        self._scans = Counter(
            "scanner_scans_total",
            "Scans finished, by verdict (clean, infected, refused: a file the checks refuse, error).",
            ["verdict"],
            registry=registry,
        )
        self._seconds = Histogram(
            "scanner_scan_seconds",
            "Time to scan one object (fetch, clamd, structure check).",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        for verdict in ("clean", "infected", "refused", "error"):
            self._scans.labels(verdict)  # at 0 from the start, so rate() sees the first of each
        self._bytes = Counter("scanner_scanned_bytes_total", "Bytes streamed through the scanner.", registry=registry)
        self._incomplete = Counter(
            "scanner_incomplete_checks_total",
            "PDF structure checks that could not finish, by what the policy did (refused, assumed_present).",
            ["outcome"],
            registry=registry,
        )

    @property
    def engine(self) -> pb.MalwareEngine:
        return pb.MALWARE_ENGINE_CLAMD if self._clamd is not None else pb.MALWARE_ENGINE_NONE

    def ScanObject(self, request: pb.ScanObjectRequest, context: grpc.ServicerContext) -> pb.ScanObjectResponse:
        if not request.key:
            raise InvalidArgument("INVALID_KEY", "the object key is empty", domain=DOMAIN)
        started = time.monotonic()
        try:
            response = self._scan(request.key)
        except InvalidArgument:
            # A verdict on the file (check incomplete, attachments too large): not the scanner failing,
            # so a hostile upload does not page on-call through the error count.
            self._scans.labels("refused").inc()
            raise
        except Exception:
            self._scans.labels("error").inc()
            raise
        finally:
            self._seconds.observe(time.monotonic() - started)
        self._scans.labels("infected" if response.verdict == pb.VERDICT_INFECTED else "clean").inc()
        return response

    def _scan(self, key: str) -> pb.ScanObjectResponse:
        with (
            tempfile.NamedTemporaryFile(prefix="pdfsmaller-scan-", suffix=".pdf") as spool,
            tempfile.TemporaryDirectory(prefix="pdfsmaller-attachments-") as attachments,
        ):
            session = self._start_instream()
            try:
                scanned = self._fetch(key, spool.file, session)
                result = self._finish_instream(session)
            finally:
                if session is not None:
                    session.close()
            spool.file.flush()
            response = pb.ScanObjectResponse(
                verdict=pb.VERDICT_INFECTED if result.infected else pb.VERDICT_CLEAN,
                signature=result.signature,
                engine=self.engine,
                scanned_bytes=scanned,
            )
            # Infected files are refused anyway; do not hand known malware to a parser too.
            if not result.infected:
                response.pdf.CopyFrom(self._structure(key, Path(spool.name), Path(attachments)))
                result = self._scan_attachments(Path(attachments))
                if result.infected:
                    response.verdict = pb.VERDICT_INFECTED
                    response.signature = result.signature
            if result.infected:
                log.warning("malware found in %s: %s", key, result.signature)
            return response

    def _structure(self, key: str, spool: Path, attachments: Path) -> pb.PdfReport:
        """The structure report of a clean file (its attachments decoded into `attachments` for clamd), with
        the compressor's opening verdict when qpdf could not open it."""
        try:
            report = self._inspect_pdf(spool, attachments if self._clamd else None)
        except AttachmentsTooLargeError:
            raise InvalidArgument(
                "ATTACHMENTS_TOO_LARGE", "the PDF's attachments are too large to scan", domain=DOMAIN
            ) from None
        report = self._unless_incomplete(key, report)
        answer = pb.PdfReport(**report.wire_fields())
        if _qpdf_could_not_open(report):
            answer.opening_failure = self._opening_failure(spool)
        return answer

    def _unless_incomplete(self, key: str, report: PdfReport) -> PdfReport:
        """A finished report as it is; an unfinished one refused, or with every kind of content present."""
        if not report.incomplete:
            return report
        log.warning(
            "PDF structure check of %s incomplete (%s); policy %s", key, report.problem, self._incomplete_check.value
        )
        if self._incomplete_check is IncompleteCheckPolicy.ASSUME_PRESENT:
            self._incomplete.labels("assumed_present").inc()
            return assume_active_content(report)
        self._incomplete.labels("refused").inc()
        raise InvalidArgument(
            "PDF_CHECK_INCOMPLETE",
            "the file's structure could not be fully checked for active content, so it was not accepted",
            domain=DOMAIN,
        )

    def _scan_attachments(self, directory: Path) -> ScanResult:
        """clamd verdicts on each decoded attachment; the first infected one, else clean."""
        for attachment in sorted(directory.iterdir()):
            session = self._start_instream()
            try:
                with attachment.open("rb") as source:
                    while chunk := source.read(ATTACHMENT_CHUNK_BYTES):
                        self._send(session, chunk, attachment.name)
                result = self._finish_instream(session)
            finally:
                if session is not None:
                    session.close()
            if result.infected:
                return result
        return ScanResult(infected=False)

    @staticmethod
    def _send(session: InstreamSession | None, chunk: bytes, what: str) -> None:
        """Stream a chunk to clamd (when configured); a clamd failure fails the scan closed."""
        if session is None:
            return
        try:
            session.send(chunk)
        except ClamdError:
            log.error("clamd failed while streaming %s", what, exc_info=True)
            raise _clamd_unavailable() from None

    def _start_instream(self) -> InstreamSession | None:
        if self._clamd is None:
            return None
        try:
            return self._clamd.instream()
        except ClamdError:
            log.error("clamd at %s is unreachable; refusing to pass the file", self._clamd.address, exc_info=True)
            raise _clamd_unavailable() from None

    def _fetch(self, key: str, spool: IO[bytes], session: InstreamSession | None) -> int:
        size = 0
        responses = self._storage.GetObject(
            storage_service_pb2.GetObjectRequest(key=key), timeout=self._storage_timeout
        )
        try:
            for response in responses:
                if response.WhichOneof("part") != "chunk":
                    continue
                chunk = response.chunk
                spool.write(chunk)
                self._send(session, chunk, key)
                size += len(chunk)
                self._bytes.inc(len(chunk))
        except grpc.RpcError as error:
            raise from_rpc(error, "storage") from None
        finally:
            # Stops the download if we bail out early (clamd failed); a no-op once it completed.
            responses.cancel()
        return size

    def _finish_instream(self, session: InstreamSession | None) -> ScanResult:
        if session is None:
            return ScanResult(infected=False)
        try:
            return session.finish()
        except ClamdError:
            log.error("clamd failed to deliver a verdict", exc_info=True)
            raise _clamd_unavailable() from None

    def GetScannerStatus(self, request: pb.GetScannerStatusRequest, context: grpc.ServicerContext) -> pb.ScannerStatus:
        if self._clamd is None:
            return pb.ScannerStatus(
                engine=pb.MALWARE_ENGINE_NONE,
                detail="DEGRADED: no CLAMD_ADDR configured; uploads get PDF structure checks only, no malware scan",
            )
        try:
            version = self._clamd.version()
        except ClamdError:
            return pb.ScannerStatus(
                engine=pb.MALWARE_ENGINE_CLAMD,
                clamd_reachable=False,
                detail=f"clamd at {self._clamd.address} is unreachable: uploads are refused until it is back",
            )
        test_only = only_test_signatures(version)
        detail = (
            "clamd has no official signature database (test signatures only: detects EICAR, not real malware)"
            if test_only
            else "clamd ready with the official signature database"
        )
        return pb.ScannerStatus(
            engine=pb.MALWARE_ENGINE_CLAMD,
            clamd_reachable=True,
            clamd_version=version,
            test_signatures_only=test_only,
            detail=detail,
        )
