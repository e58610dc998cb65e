"""The production path: prefect.yaml's deployments served by `maskfactory serve`, started with
`prefect deployment run`, labelling images on S3 (moto's server) into Delta tables on S3 that
deltalake and pandas read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from maskfactory.infra import storage
from maskfactory.infra.deployments import load_deployments
from maskfactory.simulators import datasets
from maskfactory.simulators.bad_images import write_bad_images

BIN = Path(sys.executable).parent


def test_prefect_yaml_holds_label_dataset_and_the_nightly_relabel() -> None:
    deployments = {(d.flow_name, d.name): d for d in load_deployments()}
    assert set(deployments) == {("label-dataset", "default"), ("nightly-relabel", "default")}
    assert not deployments[("label-dataset", "default")].schedules
    (nightly,) = deployments[("nightly-relabel", "default")].schedules
    assert nightly.schedule.cron == "0 2 * * *" and nightly.schedule.timezone == "UTC"


def _wait_for_deployment(name: str, serve: subprocess.Popen[bytes], timeout: float = 180) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert serve.poll() is None, "maskfactory serve exited"
            try:
                client.read_deployment_by_name(name)
                return
            except Exception:  # not registered yet
                time.sleep(0.5)
    pytest.fail(f"{name} was not served within {timeout} s")


def test_a_served_deployment_labels_s3_images_into_s3_tables(
    prefect_server: None, ray_cluster: None, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    import ray
    from prefect.settings import PREFECT_API_URL

    data, output = f"{s3_bucket}/data", f"{s3_bucket}/tables"
    datasets.write_dataset(data, "saliency", n=4, seed=5)
    bad = write_bad_images(f"{data}/images")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "MASKFACTORY_S3_ENDPOINT_URL": s3_endpoint,
    }
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed in finally, after the process)
    serve = subprocess.Popen(
        [str(BIN / "maskfactory"), "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_deployment("label-dataset/default", serve)
        run = subprocess.run(
            [
                str(BIN / "prefect"), "deployment", "run", "label-dataset/default",
                "--param", f"source={data}/images", "--param", "task=saliency", "--param", f"output={output}",
                "--param", "batch_size=4", "--watch", "--watch-timeout", "300",
            ],
            env=env, capture_output=True, text=True, timeout=360,
        )  # fmt: skip
        assert run.returncode == 0, (
            run.stdout[-3000:] + run.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-5000:]
        )
        assert "Completed" in run.stdout
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        log.close()

    options = storage.delta_options(output)
    labels = DeltaTable(f"{output}/labels", storage_options=options).to_pandas()
    assert len(labels) == 4 + len(bad) and labels["item_id"].is_unique
    assert (labels["status"] == "error").sum() == len(bad)
    assert set(labels.loc[labels["status"] != "error", "status"]) <= {"auto_accepted", "needs_review"}
    # A plain Parquet reader given the snapshot's files (what `deltalake` lists) sees the same rows.
    files = DeltaTable(f"{output}/labels", storage_options=options).file_uris()
    plain = pd.concat(pd.read_parquet(f, storage_options=storage.fsspec_options(f)) for f in files)
    assert sorted(plain["item_id"]) == sorted(labels["item_id"])
    runs = DeltaTable(f"{output}/runs", storage_options=options).to_pandas()
    assert runs["items"].tolist() == [4 + len(bad)] and runs["flow"].tolist() == ["label-dataset"]
