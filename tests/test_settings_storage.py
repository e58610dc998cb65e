"""Settings from the environment, and URIs on local disk and S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings, get_settings


def test_settings_read_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKFACTORY_STORAGE_ROOT", "s3://labels/prod")
    monkeypatch.setenv("MASKFACTORY_SAM_MODEL", "vit_b")
    monkeypatch.setenv("MASKFACTORY_SAM_CHECKPOINT", "s3://models/sam_vit_b_01ec64.pth")
    monkeypatch.setenv("MASKFACTORY_DEVICE", "cpu")
    s = get_settings()
    assert (s.storage_root, s.sam_model, s.sam_checkpoint) == (
        "s3://labels/prod",
        "vit_b",
        "s3://models/sam_vit_b_01ec64.pth",
    )
    assert s.torch_device() == "cpu"
    monkeypatch.setenv("MASKFACTORY_DEVICE", "auto")
    assert get_settings().torch_device() == "cpu"  # no GPU on these machines


def test_standard_aws_variables_work_and_maskfactory_ones_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-endpoint:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    s = get_settings()
    assert (s.aws_access_key_id, s.s3_endpoint_url, s.aws_region) == (
        "aws-key",
        "http://aws-endpoint:9000",
        "eu-west-1",
    )
    monkeypatch.setenv("MASKFACTORY_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("MASKFACTORY_S3_ACCESS_KEY_ID", "mf-key")
    s = get_settings()
    assert (s.s3_endpoint_url, s.aws_access_key_id) == ("http://minio:9000", "mf-key")


def test_both_libraries_get_the_same_s3_configuration() -> None:
    s = Settings(s3_endpoint_url="http://127.0.0.1:5000", aws_access_key_id="k", aws_secret_access_key="x")
    fs_opts = storage.fsspec_options("s3://b/k", s)
    delta = storage.delta_options("s3://b/k", s)
    assert fs_opts["endpoint_url"] == delta["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert fs_opts["key"] == delta["AWS_ACCESS_KEY_ID"] == "k"
    assert delta["AWS_ALLOW_HTTP"] == "true"  # an http:// endpoint needs this in object_store
    assert storage.fsspec_options("/data/x", s) == storage.delta_options("file:///data/x", s) == {}


def test_uri_normalisation_and_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("data") == str(tmp_path / "data")
    assert storage.normalize(f"file://{tmp_path}/x/") == f"{tmp_path}/x"
    assert storage.normalize("s3a://bucket/prefix/") == "s3://bucket/prefix"
    assert storage.join("s3://bucket/root/", "labels", "/part") == "s3://bucket/root/labels/part"
    assert storage.scheme("/abs/path") == "file" and storage.is_s3("s3://b")


def test_bytes_round_trip_and_exists(storage_root: str) -> None:
    uri = storage.join(storage_root, "nested", "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00maskfactory\xff")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00maskfactory\xff"
    storage.write_bytes(uri, b"v2")  # overwrite is whole-object
    with storage.open_uri(uri) as f:
        assert f.read() == b"v2"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(storage_root, "missing.bin"))
