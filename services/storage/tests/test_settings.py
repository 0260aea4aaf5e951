import pytest

from libs.settings import SettingsError
from services.storage.settings import StorageSettings


def test_defaults() -> None:
    settings = StorageSettings.from_env({})
    assert settings.listen == "127.0.0.1:8053"
    assert settings.metrics_port == 9103
    assert settings.backend == "local"
    assert settings.directory == ".data/objects"
    assert settings.s3 is None


def test_s3_reports_every_missing_variable_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        StorageSettings.from_env({"STORAGE_BACKEND": "s3"})
    problems = "\n".join(raised.value.problems)
    for name in ("S3_ENDPOINT", "S3_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        assert name in problems
    assert len(raised.value.problems) == 4


def test_s3_endpoint_url_sets_tls_from_scheme() -> None:
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT": "http://minio:9000/",
        "S3_BUCKET": "pdfs",
        "S3_ACCESS_KEY": "ak",
        "S3_SECRET_KEY": "sk",
    }
    settings = StorageSettings.from_env(env)
    assert settings.s3 is not None
    assert settings.s3.endpoint == "minio:9000"
    assert settings.s3.secure is False
    assert settings.s3.region == "us-east-1"
    assert StorageSettings.from_env({**env, "S3_SECURE": "true"}).s3.secure is True  # type: ignore[union-attr]


def test_bad_backend_and_port_reported_together() -> None:
    with pytest.raises(SettingsError) as raised:
        StorageSettings.from_env({"STORAGE_BACKEND": "ftp", "STORAGE_LISTEN": "nope"})
    assert len(raised.value.problems) == 2
