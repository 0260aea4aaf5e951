"""Stopping and restarting the system keeps jobs and their results (make run's data folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.devstack.stack import Ports, Stack
from tests.e2e_client import RestClient

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"


def test_jobs_and_results_survive_a_restart(tmp_path: Path) -> None:
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    first = Stack(data_dir=tmp_path, ports=Ports.random(), with_clamd=False)
    try:
        first.start(timeout=90)
        client = RestClient(first.url)
        job_id = client.upload(source, filename="form.pdf").json()["id"]
        before = client.wait(job_id)
        assert before["state"] == "JOB_STATE_SUCCEEDED"
        result_before = client.request("GET", f"/v1/jobs/{job_id}/result").body
    finally:
        first.stop()

    second = Stack(data_dir=tmp_path, ports=Ports.random(), with_clamd=False)
    try:
        second.start(timeout=90)
        client = RestClient(second.url)
        after = client.job(job_id)
        assert after["state"] == "JOB_STATE_SUCCEEDED"
        assert after["output_sha256"] == before["output_sha256"]
        assert client.request("GET", f"/v1/jobs/{job_id}/result").body == result_before
    finally:
        second.stop()
