"""ScannerService over real gRPC, with a real storage server and a real clamd."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2 as pb
from pdfsmaller.scanner.v1 import scanner_service_pb2_grpc as pb_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc

from devtools.servers.clamd import eicar_bytes
from libs.errors import reason_of
from libs.grpc_client import open_channel
from libs.grpc_server import RunningServer
from libs.sandbox import ChildLimits
from services.compressor.engine import CompressOptions, EngineError, compress
from services.scanner.app import SERVICE_NAME, build
from services.scanner.opening_check import OpeningCheck
from services.scanner.pdf_checks import IncompleteCheckPolicy
from services.scanner.settings import ScannerSettings
from services.scanner.tests import opening_pdfs, pdfs
from services.storage.tests.helpers import plain_channel, put_requests
from tests.plugins.services import local_storage

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
ENCRYPTED = "samplefiles__libreoffice-writer-password.pdf"
MIB = 1024 * 1024


class Scanner:
    def __init__(self, server: RunningServer, storage_channel: grpc.Channel) -> None:
        self.server = server
        self.storage_channel = storage_channel
        self.channel = plain_channel(server.address)
        self.stub = pb_grpc.ScannerServiceStub(self.channel)

    def health(self) -> int:
        answer = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
        return int(answer.status)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self.storage_channel.close()


def start_scanner(storage_addr: str, clamd_addr: str | None, *, metrics: bool = False, **settings_: Any) -> Scanner:
    settings = ScannerSettings(
        listen="127.0.0.1:0",
        metrics_port=0,
        storage_addr=storage_addr,
        clamd_addr=clamd_addr,
        clamd_timeout_seconds=30,
        **settings_,
    )
    storage_channel = open_channel(storage_addr)  # the production wiring (traced channel)
    spec = build(settings, storage_channel=storage_channel).spec
    if not metrics:
        spec.metrics_port = None  # its HTTP server takes 0.5 s to stop
    return Scanner(RunningServer(spec).start(), storage_channel)


@pytest.fixture(scope="module")
def storage_addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_storage(str(tmp_path_factory.mktemp("objects"))) as server:
        yield server.address


@pytest.fixture(scope="module")
def storage(storage_addr: str) -> Iterator[storage_service_pb2_grpc.StorageServiceStub]:
    with plain_channel(storage_addr) as channel:
        yield storage_service_pb2_grpc.StorageServiceStub(channel)


@pytest.fixture(scope="module")
def scanner(storage_addr: str, clamd_addr: str) -> Iterator[Scanner]:
    under_test = start_scanner(storage_addr, clamd_addr)
    try:
        yield under_test
    finally:
        under_test.close()


def store(storage: storage_service_pb2_grpc.StorageServiceStub, key: str, data: bytes) -> None:
    storage.PutObject(put_requests(key, [data[i : i + MIB] for i in range(0, len(data), MIB)]), timeout=60)


def test_eicar_inside_a_pdf_is_infected(scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub) -> None:
    data = pdfs.with_eicar_attachment()
    store(storage, "scan/eicar.pdf", data)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/eicar.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_INFECTED
    assert "EICAR" in answer.signature.upper()
    assert answer.engine == pb.MALWARE_ENGINE_CLAMD
    assert answer.scanned_bytes == len(data)
    assert not answer.HasField("pdf")


def test_eicar_in_a_compressed_attachment_is_infected(
    scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    data = pdfs.with_embedded_file(eicar_bytes(), compress=True)
    assert eicar_bytes() not in data  # only visible after clamd inflates the stream
    store(storage, "scan/eicar-flate.pdf", data)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/eicar-flate.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_INFECTED


def test_eicar_in_compressed_octet_stream_attachment(
    scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    """ClamAV 1.4.6 does not inflate this attachment itself; the scanner hands it the decoded bytes."""
    data = pdfs.with_embedded_file(eicar_bytes(), compress=True, subtype="/application/octet-stream")
    store(storage, "scan/eicar-octet.pdf", data)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/eicar-octet.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_INFECTED
    assert "EICAR" in answer.signature.upper()


def test_clean_corpus_pdf(scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub) -> None:
    data = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    store(storage, "scan/form.pdf", data)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/form.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_CLEAN
    assert answer.signature == ""
    assert answer.engine == pb.MALWARE_ENGINE_CLAMD
    assert answer.scanned_bytes == len(data)
    assert answer.pdf == pb.PdfReport(is_pdf=True, page_count=1, has_forms=True)


def test_120_mb_stream_is_scanned_to_the_end(
    scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    """EICAR as the last bytes of a 120 MiB object: any truncation would give a clean verdict."""
    filler = b"%PDF-1.7\n" + bytes(MIB - 9)
    size = 120 * MIB + len(eicar_bytes())

    def chunks() -> Iterator[bytes]:
        for _ in range(120):
            yield filler
        yield eicar_bytes()

    storage.PutObject(put_requests("scan/huge.bin", chunks()), timeout=120)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/huge.bin"), timeout=120)
    assert answer.scanned_bytes == size
    assert answer.verdict == pb.VERDICT_INFECTED


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("encrypted", lambda: (DATA / ENCRYPTED).read_bytes(), {"encrypted": True, "opening_failure": "ENCRYPTED_PDF"}),
        ("javascript", pdfs.with_open_action_javascript, {"has_javascript": True, "page_count": 1}),
        ("launch", pdfs.with_launch_action, {"has_launch_action": True, "page_count": 1}),
        (
            "signed-form",
            pdfs.with_form_and_signature_field,
            {"has_forms": True, "has_signature": True, "page_count": 1},
        ),
        ("attachment", lambda: pdfs.with_embedded_file(b"notes"), {"has_embedded_files": True, "page_count": 1}),
    ],
)
def test_structure_report(
    scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub, name: str, build: object, expected: dict
) -> None:
    store(storage, f"scan/{name}.pdf", build())  # type: ignore[operator]
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key=f"scan/{name}.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_CLEAN
    assert answer.pdf == pb.PdfReport(is_pdf=True, **expected)


def test_not_a_pdf(scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub) -> None:
    store(storage, "scan/text.txt", b"just text\n")
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/text.txt"), timeout=60)
    assert answer.verdict == pb.VERDICT_CLEAN
    assert not answer.pdf.is_pdf
    assert answer.pdf.opening_failure == "NOT_A_PDF"


# --- The compressor's opening verdict: refuse only what the job would certainly fail ----------------


def _engine_reason(data: bytes, folder: Path) -> str:
    """What the compressor's engine says of the file, run as a job runs it: its reason code, or "" when it
    compresses the file."""
    source = folder / "in.pdf"
    source.write_bytes(data)
    try:
        compress(source, folder / "out.pdf", CompressOptions())
    except EngineError as error:
        return error.reason
    return ""


@pytest.mark.parametrize(
    ("name", "build", "qpdf_opens", "expected"),
    [
        ("user-password", opening_pdfs.user_password, False, "ENCRYPTED_PDF"),
        ("owner-password", opening_pdfs.owner_password_only, True, ""),
        ("wrong-xref-offset", opening_pdfs.wrong_xref_offset, True, ""),
        ("broken-xref-stream", opening_pdfs.broken_xref_stream, False, ""),
        ("unreadable", opening_pdfs.unreadable, False, "MALFORMED_PDF"),
        ("lost-page", opening_pdfs.lost_page, True, ""),
    ],
)
def test_opening_failure_is_what_the_engine_fails_the_job_with(
    scanner: Scanner,
    storage: storage_service_pb2_grpc.StorageServiceStub,
    tmp_path: Path,
    name: str,
    build: Callable[[], bytes],
    qpdf_opens: bool,
    expected: str,
) -> None:
    data = build()
    store(storage, f"scan/opening-{name}.pdf", data)
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key=f"scan/opening-{name}.pdf"), timeout=60)
    assert answer.verdict == pb.VERDICT_CLEAN
    assert (answer.pdf.is_pdf and not answer.pdf.encrypted) == qpdf_opens  # which path the scanner took
    assert answer.pdf.opening_failure == expected
    assert _engine_reason(data, tmp_path) == expected


def test_an_opening_check_that_cannot_finish_refuses_nothing(tmp_path: Path) -> None:
    source = tmp_path / "locked.pdf"
    source.write_bytes(opening_pdfs.user_password())
    assert OpeningCheck()(source) == "ENCRYPTED_PDF"
    assert OpeningCheck(ChildLimits(wall_seconds=0.05))(source) == ""  # killed at the deadline


def test_missing_object_is_not_found(scanner: Scanner) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/none"), timeout=30)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(raised.value) == "OBJECT_NOT_FOUND"


def test_status_and_readiness_with_clamd(scanner: Scanner) -> None:
    status = scanner.stub.GetScannerStatus(pb.GetScannerStatusRequest(), timeout=10)
    assert status.engine == pb.MALWARE_ENGINE_CLAMD
    assert status.clamd_reachable
    assert status.clamd_version.startswith("ClamAV ")
    # The fixture's clamd loads only the EICAR test database (unless TEST_CLAMD_ADDR points elsewhere).
    assert status.test_signatures_only == ("/" not in status.clamd_version)
    assert scanner.health() == health_pb2.HealthCheckResponse.SERVING


def test_clamd_down_fails_closed(
    storage_addr: str, storage: storage_service_pb2_grpc.StorageServiceStub, closed_address: str
) -> None:
    store(storage, "scan/clean-but-unscanned.pdf", pdfs.plain(1))
    down = start_scanner(storage_addr, closed_address, metrics=True)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            down.stub.ScanObject(pb.ScanObjectRequest(key="scan/clean-but-unscanned.pdf"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(raised.value) == "CLAMD_UNAVAILABLE"
        status = down.stub.GetScannerStatus(pb.GetScannerStatusRequest(), timeout=10)
        assert status.engine == pb.MALWARE_ENGINE_CLAMD
        assert not status.clamd_reachable
        assert down.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        body = urllib.request.urlopen(f"http://127.0.0.1:{down.server.metrics_port}/metrics", timeout=5).read()
        # What the ScannerDependencyDown alert watches.
        assert 'scanner_dependency_up{dependency="clamd"} 0.0' in body.decode()
        assert 'scanner_dependency_up{dependency="storage"} 1.0' in body.decode()
    finally:
        down.close()


def test_without_clamd_is_degraded_but_checks_structure(
    storage_addr: str, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    store(storage, "scan/degraded.pdf", pdfs.with_open_action_javascript())
    degraded = start_scanner(storage_addr, None)
    try:
        answer = degraded.stub.ScanObject(pb.ScanObjectRequest(key="scan/degraded.pdf"), timeout=30)
        assert answer.engine == pb.MALWARE_ENGINE_NONE
        assert answer.verdict == pb.VERDICT_CLEAN
        assert answer.pdf.has_javascript
        status = degraded.stub.GetScannerStatus(pb.GetScannerStatusRequest(), timeout=10)
        assert status.engine == pb.MALWARE_ENGINE_NONE
        assert "DEGRADED" in status.detail
        assert degraded.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        degraded.close()


def test_storage_down_is_unavailable_and_not_ready(clamd_addr: str, closed_address: str) -> None:
    orphan = start_scanner(closed_address, clamd_addr)
    try:
        assert orphan.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as raised:
            orphan.stub.ScanObject(pb.ScanObjectRequest(key="scan/any"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(raised.value) == "DEPENDENCY_UNAVAILABLE"
    finally:
        orphan.close()


def test_metrics(storage_addr: str, clamd_addr: str, storage: storage_service_pb2_grpc.StorageServiceStub) -> None:
    store(storage, "scan/m-clean.pdf", pdfs.plain(1))
    store(storage, "scan/m-bad.pdf", pdfs.with_eicar_attachment())
    with_metrics = start_scanner(storage_addr, clamd_addr, metrics=True)
    try:
        for key in ("scan/m-clean.pdf", "scan/m-bad.pdf"):
            with_metrics.stub.ScanObject(pb.ScanObjectRequest(key=key), timeout=30)
        url = f"http://127.0.0.1:{with_metrics.server.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        with_metrics.close()
    assert 'scanner_scans_total{verdict="clean"} 1.0' in body
    assert 'scanner_scans_total{verdict="infected"} 1.0' in body
    assert "scanner_scan_seconds_count 2.0" in body
    assert "scanner_scanned_bytes_total" in body
    assert "scanner_incomplete_checks_total" in body
    assert 'scanner_dependency_up{dependency="clamd"} 1.0' in body
    assert 'scanner_dependency_up{dependency="storage"} 1.0' in body


# --- a structure check that cannot finish fails closed --------------------------------------------

ALL_CONTENT = {
    "has_javascript": True,
    "has_launch_action": True,
    "has_embedded_files": True,
    "has_signature": True,
    "has_forms": True,
}


def test_bypass_file_shape_is_reported_with_its_launch_action(
    scanner: Scanner, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    store(storage, "scan/odd-key-launch.pdf", pdfs.launch_with_non_utf8_key())
    answer = scanner.stub.ScanObject(pb.ScanObjectRequest(key="scan/odd-key-launch.pdf"), timeout=60)
    assert answer.pdf == pb.PdfReport(is_pdf=True, page_count=1, has_launch_action=True)


@pytest.mark.parametrize(
    ("name", "data", "limits"),
    [
        ("nested-too-deep", pdfs.nested_too_deep(), {}),
        ("timed-out", pdfs.plain(1), {"pdf_check_timeout_seconds": 0.001}),
    ],
)
def test_incomplete_check_is_refused_by_default(
    storage_addr: str, storage: storage_service_pb2_grpc.StorageServiceStub, name: str, data: bytes, limits: dict
) -> None:
    store(storage, f"scan/incomplete-{name}.pdf", data)
    strict = start_scanner(storage_addr, None, metrics=True, **limits)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            strict.stub.ScanObject(pb.ScanObjectRequest(key=f"scan/incomplete-{name}.pdf"), timeout=30)
        url = f"http://127.0.0.1:{strict.server.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        strict.close()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "PDF_CHECK_INCOMPLETE"
    assert "could not be fully checked" in (raised.value.details() or "")
    assert 'scanner_incomplete_checks_total{outcome="refused"} 1.0' in body
    assert 'scanner_scans_total{verdict="refused"} 1.0' in body
    assert 'scanner_scans_total{verdict="error"} 0.0' in body


def test_incomplete_check_can_be_accepted_with_all_content_assumed(
    storage_addr: str, storage: storage_service_pb2_grpc.StorageServiceStub
) -> None:
    store(storage, "scan/incomplete-assumed.pdf", pdfs.nested_too_deep())
    lenient = start_scanner(storage_addr, None, incomplete_check=IncompleteCheckPolicy.ASSUME_PRESENT)
    try:
        answer = lenient.stub.ScanObject(pb.ScanObjectRequest(key="scan/incomplete-assumed.pdf"), timeout=30)
    finally:
        lenient.close()
    assert answer.verdict == pb.VERDICT_CLEAN
    assert answer.pdf == pb.PdfReport(is_pdf=True, damaged=True, incomplete=True, **ALL_CONTENT)
