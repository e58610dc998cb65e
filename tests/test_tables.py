"""Delta tables: schemas, idempotent batch writes and concurrent writers, on local disk and on S3."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from maskfactory.infra import storage, tables
from maskfactory.infra.settings import Settings, get_settings


def label_rows(n: int, run_id: str, batch: int) -> pa.Table:
    """``n`` labels rows with every column filled, item ids unique per (run, batch)."""
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    return pa.table(
        {
            "item_id": [f"{run_id}-{batch}-{i}" for i in range(n)],
            "uri": [f"s3://images/{batch}/{i}.png" for i in range(n)],
            "task": ["shadow"] * n,
            "width": [64] * n,
            "height": [48] * n,
            "mask_rle_size": [[48, 64]] * n,
            "mask_rle_counts": [b"PP0"] * n,
            "bbox": [[1.0, 2.0, 3.0, 4.0]] * n,
            "area": [12] * n,
            "prompts": [[{"x": 3.5, "y": 4.5, "label": 1}, {"x": 9.0, "y": 1.0, "label": 0}]] * n,
            "predicted_iou": [0.9] * n,
            "stability": [0.95] * n,
            "confidence": [0.8] * n,
            "status": ["auto_accepted"] * n,
            "error": [None] * n,
            "source": ["auto"] * n,
            "sam_version": ["abc"] * n,
            "policy_version": ["def"] * n,
            "adapter_version": ["ghi"] * n,
            "run_id": [run_id] * n,
            "labelled_at": [now] * n,
        }
    )


def test_every_schema_round_trips(storage_root: str) -> None:
    """What Delta stores and returns is exactly the declared Arrow schema, for all four tables."""
    for name, schema in tables.SCHEMAS.items():
        ref = tables.TableRef(storage_root, name)
        rows = label_rows(2, "r", 0) if name == "labels" else pa.table({schema.names[0]: ["x", "y"]})
        assert tables.write_batch(ref, rows, run_id="r", batch_id=0)
        back = tables.read_table(ref)
        assert back.schema == schema, name
        assert back.num_rows == 2
    labels = tables.read_table(tables.TableRef(storage_root, "labels")).to_pylist()
    assert labels[0]["prompts"] == [{"x": 3.5, "y": 4.5, "label": 1}, {"x": 9.0, "y": 1.0, "label": 0}]
    assert labels[0]["mask_rle_size"] == [48, 64]


def test_rewriting_a_batch_changes_nothing(storage_root: str) -> None:
    ref = tables.TableRef(storage_root, "labels")
    assert tables.write_batch(ref, label_rows(3, "run1", 0), run_id="run1", batch_id=0) is True
    version = DeltaTable(ref.uri, storage_options=ref.storage_options).version()
    assert tables.write_batch(ref, label_rows(3, "run1", 0), run_id="run1", batch_id=0) is False
    assert DeltaTable(ref.uri, storage_options=ref.storage_options).version() == version
    # Another batch of the same run, and the same batch id of another run, are new commits.
    assert tables.write_batch(ref, label_rows(2, "run1", 1), run_id="run1", batch_id=1)
    assert tables.write_batch(ref, label_rows(2, "run2", 0), run_id="run2", batch_id=0)
    df = tables.read_table(ref).to_pandas()
    assert len(df) == 7
    assert df.item_id.is_unique
    assert tables.batch_committed(ref, "run1", 1)
    assert not tables.batch_committed(ref, "run1", 2)


def test_rows_are_conformed_to_the_schema(tmp_path: Path) -> None:
    ref = tables.TableRef(str(tmp_path), "runs")
    tables.write_batch(ref, pa.table({"items": [3], "run_id": ["r"]}), run_id="r", batch_id=0)
    row = tables.read_table(ref).to_pylist()[0]
    assert row["items"] == 3 and row["run_id"] == "r" and row["flow"] is None
    with pytest.raises(ValueError, match="itemz"):
        tables.write_batch(ref, pa.table({"itemz": [3]}), run_id="r", batch_id=1)
    with pytest.raises(ValueError, match="unknown table"):
        tables.TableRef(str(tmp_path), "lables")


def test_reading_a_missing_table_gives_its_empty_schema(tmp_path: Path) -> None:
    got = tables.read_table(tables.TableRef(str(tmp_path), "reviews"))
    assert got.num_rows == 0 and got.schema == tables.REVIEWS


def test_delta_refuses_a_concurrent_commit_of_the_same_batch(storage_root: str) -> None:
    """The race write_batch relies on, made deterministic: two writers both checked the log before
    either committed. The second commit must be refused, not rebased on top of the first."""
    ref = tables.TableRef(storage_root, "labels")
    first, second = tables.open_table(ref), tables.open_table(ref)
    app_id = tables.batch_app_id(ref, "race", 0)
    assert first.transaction_version(app_id) is None and second.transaction_version(app_id) is None
    rows = tables.conform(label_rows(2, "race", 0), tables.LABELS)
    write_deltalake(first, rows, mode="append", commit_properties=tables.batch_commit_properties(app_id))
    with pytest.raises(CommitFailedError):
        write_deltalake(second, rows, mode="append", commit_properties=tables.batch_commit_properties(app_id))
    assert len(tables.read_table(ref)) == 2
    # A different batch from the same stale snapshot is rebased and lands.
    other = tables.batch_commit_properties(tables.batch_app_id(ref, "race", 1))
    write_deltalake(
        second,
        tables.conform(label_rows(3, "race", 1), tables.LABELS),
        mode="append",
        commit_properties=other,
    )
    assert len(tables.read_table(ref)) == 5


def _write_after_barrier(
    root: str, run_id: str, batch_id: int, n: int, settings: Settings, barrier: object, out: object
) -> None:
    """Child process: wait until every writer is ready, then write one batch and report the result."""
    barrier.wait()  # type: ignore[attr-defined]
    committed = tables.write_batch(
        tables.TableRef(root, "labels", settings),
        label_rows(n, run_id, batch_id),
        run_id=run_id,
        batch_id=batch_id,
    )
    out.put((batch_id, committed, os.getpid()))  # type: ignore[attr-defined]


def test_concurrent_processes_commit_every_batch_once(storage_root: str) -> None:
    """Four processes released at the same instant: three different batches and a second copy of
    batch 0 (a retry racing the original). Every batch lands, and batch 0 lands once."""
    settings = get_settings()  # children get the moto endpoint explicitly, not through the environment
    ctx = mp.get_context("spawn")
    jobs = [(0, 3), (1, 4), (2, 5), (0, 3)]
    barrier, out = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [
        ctx.Process(target=_write_after_barrier, args=(storage_root, "run", b, n, settings, barrier, out))
        for b, n in jobs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = [out.get(timeout=5) for _ in procs]
    assert sorted(committed for b, committed, _ in results if b == 0) == [False, True]
    assert all(committed for b, committed, _ in results if b != 0)
    assert len({pid for *_, pid in results}) == 4  # really four processes

    df = tables.read_table(tables.TableRef(storage_root, "labels")).to_pandas()
    assert len(df) == 3 + 4 + 5
    assert df.item_id.is_unique
    assert df.groupby(df.item_id.str.split("-").str[1]).size().to_dict() == {"0": 3, "1": 4, "2": 5}


def test_a_ray_task_that_dies_after_committing_is_retried_without_duplicates(
    ray_cluster: None, storage_root: str, tmp_path: Path
) -> None:
    """The worker process commits its batch, then is killed before it can report success. Ray
    reruns the task; the rerun finds the batch's transaction in the log and writes nothing."""
    import ray

    settings = get_settings()
    marker = tmp_path / "first-attempt-done"

    @ray.remote(max_retries=2)
    def write_then_crash(root: str, batch_id: int) -> bool:
        committed = tables.write_batch(
            tables.TableRef(root, "labels", settings),
            label_rows(4, "ray", batch_id),
            run_id="ray",
            batch_id=batch_id,
        )
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies: no result, no exception, no cleanup
        return committed

    assert ray.get(write_then_crash.remote(storage_root, 7)) is False  # the retry found it committed
    assert marker.exists()
    df = tables.read_table(tables.TableRef(storage_root, "labels")).to_pandas()
    assert len(df) == 4 and df.item_id.is_unique


def test_a_prefect_task_retry_does_not_duplicate_a_batch(prefect_server: None, tmp_path: Path) -> None:
    """A Prefect task that fails after its commit is retried by Prefect; the table keeps one copy."""
    from prefect import flow, task

    root = str(tmp_path)
    attempts: list[bool] = []

    @task(retries=1, retry_delay_seconds=0)
    def write_labels(batch_id: int) -> bool:
        committed = tables.write_batch(
            tables.TableRef(root, "labels"), label_rows(5, "pf", batch_id), run_id="pf", batch_id=batch_id
        )
        attempts.append(committed)
        if len(attempts) == 1:
            raise RuntimeError("lost the connection after committing")
        return committed

    @flow
    def label_once() -> bool:
        return write_labels(0)

    assert label_once() is False
    assert attempts == [True, False]
    assert len(tables.read_table(tables.TableRef(root, "labels"))) == 5


def test_tables_are_readable_by_pandas_through_delta(storage_root: str) -> None:
    """The delta-rs reader and pandas (via pyarrow) see the same rows on both storages."""
    ref = tables.TableRef(storage_root, "labels")
    tables.write_batch(ref, label_rows(3, "pd", 0), run_id="pd", batch_id=0)
    dt = DeltaTable(ref.uri, storage_options=storage.delta_options(ref.uri))
    df: pd.DataFrame = dt.to_pandas()
    assert sorted(df.item_id) == ["pd-0-0", "pd-0-1", "pd-0-2"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_outages_are_retried_then_fail_cleanly() -> None:
    """An endpoint that comes back within the retries gets the batch; one that stays down fails the
    write with BatchWriteError and nothing committed."""
    import threading

    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{port}")
    ref = tables.TableRef("s3://outage/root", "labels", settings)

    def come_back() -> None:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1").create_bucket(
            Bucket="outage"
        )
        servers.append(server)

    servers: list[ThreadedMotoServer] = []
    # Down through the first attempt (delta-rs gives up on a request after ~2.5 s of its own retries),
    # up for a later one.
    threading.Timer(3.0, come_back).start()
    start = time.monotonic()
    try:
        assert tables.write_batch(ref, label_rows(3, "r", 0), run_id="r", batch_id=0)
        assert time.monotonic() - start > 3.0
        assert tables.read_table(ref).num_rows == 3
    finally:
        for server in servers:
            server.stop()
    # Now nothing listens on the port: every attempt fails and the error says so.
    with pytest.raises(tables.BatchWriteError, match="storage failed 3 times"):
        tables.write_batch(ref, label_rows(3, "r", 1), run_id="r", batch_id=1)
