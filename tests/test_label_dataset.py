"""The label-dataset pipeline: discovery, the AutoLabeler, routing, exactly-once writes, bad input,
the flow on a real Prefect server and a real Ray cluster, and crashes of an actor or of the flow."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest

from maskfactory.infra import masks, tables
from maskfactory.models.alignsam.agent import load_agent
from maskfactory.simulators import datasets
from maskfactory.simulators.bad_images import bad_image_files, write_bad_images
from maskfactory.tasks import discover, labelling
from maskfactory.tasks.policy import zoo_policy_path

TASK = "saliency"
POLICY = zoo_policy_path(TASK)
MASKFACTORY = str(Path(sys.executable).with_name("maskfactory"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Folders of images: ``good`` (24 generated), ``bad`` (only broken files), ``mix`` (6 + broken)."""
    root = tmp_path_factory.mktemp("sources")
    datasets.write_dataset(str(root / "good"), TASK, n=24, seed=3)
    write_bad_images(str(root / "bad"))
    datasets.write_dataset(str(root / "mix"), TASK, n=6, seed=4)
    write_bad_images(str(root / "mix" / "images"))
    return {
        "good": str(root / "good" / "images"),
        "bad": str(root / "bad"),
        "mix": str(root / "mix" / "images"),
        "mix_data": str(root / "mix"),
    }


def labels_of(output: str) -> pa.Table:
    return tables.read_table(tables.TableRef(output, "labels"))


def assert_each_item_once(output: str, source: str) -> pa.Table:
    rows = labels_of(output)
    ids = rows["item_id"].to_pylist()
    assert len(ids) == len(set(ids)), "an item was written twice"
    assert set(rows["uri"].to_pylist()) == {uri for uri, _ in discover.list_source(source)}
    return rows


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_lists_images_and_ids_follow_the_bytes(tmp_path: Path, sources: dict[str, str]) -> None:
    found = discover.list_source(sources["mix"])
    assert len(found) == 6 + len(bad_image_files())
    (tmp_path / "notes.txt").write_text("not an item")
    (tmp_path / "a.png").write_bytes(b"one")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(b"two")
    assert [Path(u).name for u, _ in discover.list_source(str(tmp_path))] == ["a.png", "b.PNG"]
    before = discover.item_id(str(tmp_path / "a.png"), b"one")
    assert discover.item_id(str(tmp_path / "a.png"), b"one") == before
    assert discover.item_id(str(tmp_path / "a.png"), b"changed") != before
    assert discover.item_id(str(tmp_path / "c.png"), b"one") != before
    with pytest.raises(ValueError, match="no images"):
        discover.list_source(str(_empty_dir(tmp_path)))
    with pytest.raises(FileNotFoundError):
        discover.list_source(str(tmp_path / "missing"))


def _empty_dir(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_a_manifest_is_a_source(sources: dict[str, str]) -> None:
    found = discover.list_source(sources["mix_data"] + "/manifest.parquet")
    assert len(found) == 6 and all(prompt for _, prompt in found)


def test_discovery_skips_items_labelled_by_the_same_versions(tmp_path: Path, sources: dict[str, str]) -> None:
    ref = tables.TableRef(str(tmp_path), "labels")
    first = discover.discover(sources["mix"], TASK, ref, "sam-1", "policy-1")
    assert first.skipped == 0 and not first.relabel
    done = first.todo[:3]
    rows = [
        {"item_id": it.item_id, "uri": it.uri, "task": TASK, "sam_version": "sam-1", "policy_version": v}
        for it, v in zip(done, ["policy-1", "policy-1", "policy-0"], strict=True)
    ]
    tables.write_batch(ref, pa.Table.from_pylist(rows), run_id="r", batch_id=0)
    again = discover.discover(sources["mix"], TASK, ref, "sam-1", "policy-1")
    assert again.skipped == 2
    assert again.relabel == {done[2].item_id}  # labelled by an older policy: labelled again, merged
    assert len(again.todo) == len(first.todo) - 2
    other_task = discover.discover(sources["mix"], "glass", ref, "sam-1", "policy-1")
    assert other_task.skipped == 0


# --- the AutoLabeler, routing and exactly-once writes (no Ray) ------------------------------------


@pytest.fixture(scope="module")
def labelled_mix(sources: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    labels = tables.TableRef(str(tmp_path_factory.mktemp("unused")), "labels")
    items = discover.discover(sources["mix"], TASK, labels, "x", "y").todo
    labeler = labelling.AutoLabeler(TASK, POLICY, run_id="run-1", threads=1)
    return labeler(
        pa.Table.from_pylist([{"item_id": i.item_id, "uri": i.uri, "prompt": i.prompt} for i in items])
    )


def test_bad_files_become_error_rows_with_their_reasons(labelled_mix: pa.Table) -> None:
    expected = {name: reason for name, (_, reason) in bad_image_files().items()}
    errors = {Path(r["uri"]).name: r["error"] for r in labelled_mix.to_pylist() if r["status"] == "error"}
    assert set(errors) == set(expected)
    for name, reason in expected.items():
        assert errors[name].startswith(f"{reason}: "), errors[name]


def test_good_images_get_a_mask_prompts_scores_and_versions(labelled_mix: pa.Table) -> None:
    good = [r for r in labelled_mix.to_pylist() if r["status"] != "error"]
    assert len(good) == 6
    _, policy_version, _ = load_agent(POLICY)
    for r in good:
        assert r["status"] is None  # routing happens in the driver
        mask = masks.decode(masks.RLE(r["mask_rle_size"], r["mask_rle_counts"]))
        assert mask.shape == (r["height"], r["width"]) == (256, 256)
        assert r["area"] == mask.sum() > 0
        assert len(r["prompts"]) == 2 + 15 and {p["label"] for p in r["prompts"]} <= {0, 1}
        assert 0.0 < r["confidence"] < 1.0 and 0.0 <= r["stability"] <= 1.0
        assert r["policy_version"] == policy_version and r["sam_version"] and r["run_id"] == "run-1"
        assert r["source"] == "auto"


def test_routing_follows_the_threshold(labelled_mix: pa.Table) -> None:
    confidence = np.array([c for c in labelled_mix["confidence"].to_pylist() if c is not None])
    threshold = float(np.median(confidence))
    routed = labelling.route(labelled_mix, threshold).to_pylist()
    for r in routed:
        if r["error"]:
            assert r["status"] == "error"
        else:
            assert r["status"] == ("auto_accepted" if r["confidence"] >= threshold else "needs_review")
    statuses = [r["status"] for r in labelling.route(labelled_mix, 1.0).to_pylist()]
    assert "auto_accepted" not in statuses


def test_a_batch_delivered_twice_lands_once_and_relabels_merge(
    tmp_path: Path, labelled_mix: pa.Table
) -> None:
    ref = tables.TableRef(str(tmp_path), "labels")
    rows = labelling.route(labelled_mix, 0.5)
    written: set[str] = set()
    assert labelling.write_labels(ref, rows, "run-1", written, set()).num_rows == rows.num_rows
    assert labelling.write_labels(ref, rows, "run-1", written, set()).num_rows == 0  # same run: dropped
    assert labelling.write_labels(ref, rows, "run-1", set(), set()).num_rows == rows.num_rows  # new driver
    assert labels_of(str(tmp_path)).num_rows == rows.num_rows  # ...but the commit id matched: no new rows
    # A later run relabels every item (e.g. after an agent update): rows are replaced, not added.
    everything = set(rows["item_id"].to_pylist())
    relabelled = rows.set_column(
        rows.schema.get_field_index("run_id"), "run_id", pa.array(["run-2"] * rows.num_rows)
    )
    labelling.write_labels(ref, relabelled, "run-2", set(), everything)
    after = labels_of(str(tmp_path))
    assert after.num_rows == rows.num_rows and set(after["run_id"].to_pylist()) == {"run-2"}


# --- the flow on a real Prefect server and Ray cluster --------------------------------------------


@pytest.mark.parametrize("which", ["mix", "bad", "good"])
def test_label_dataset_finishes_on_any_mix_and_a_rerun_skips_everything(
    prefect_server: None, ray_cluster: None, sources: dict[str, str], tmp_path: Path, which: str
) -> None:
    from maskfactory.flows.label_dataset import label_dataset

    source, output = sources[which], str(tmp_path / "tables")
    result = label_dataset(source=source, task=TASK, output=output, batch_size=4)
    rows = assert_each_item_once(output, source)
    n_bad = {"mix": 6, "bad": 6, "good": 0}[which]
    assert result["errors"] == n_bad == rows.filter(pa.compute.equal(rows["status"], "error")).num_rows
    assert (
        result["items"] == rows.num_rows
        and result["auto_accepted"] + result["needs_review"] == rows.num_rows - n_bad
    )
    runs = tables.read_table(tables.TableRef(output, "runs"))
    assert runs.num_rows == 1 and runs["items"].to_pylist() == [rows.num_rows]
    assert_artifacts(result["run_id"], rows.num_rows)
    again = label_dataset(source=source, task=TASK, output=output, batch_size=4)
    assert again["items"] == 0 and again["skipped"] == rows.num_rows
    assert labels_of(output).num_rows == rows.num_rows


def assert_artifacts(run_id: str, items: int) -> None:
    """The run published a summary table artifact and a progress artifact that reached 100%."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    summary = next(a for a in artifacts if a.key == f"label-dataset-{TASK}")
    figures = {row["figure"]: row["value"] for row in json.loads(summary.data)}
    assert figures["items"] == items and figures["run_id"] == run_id
    progress = [a.data for a in artifacts if a.type == "progress"]
    assert progress and (items == 0 or progress[0] == 100.0)


def _kill_autolabeler_processes() -> list[int]:
    killed = []
    for p in psutil.process_iter(["cmdline"]):
        if "AutoLabeler" in " ".join(p.info["cmdline"] or []):
            os.kill(p.pid, signal.SIGKILL)
            killed.append(p.pid)
    return killed


def test_a_ray_actor_killed_mid_batch_loses_and_duplicates_nothing(
    ray_cluster: None, sources: dict[str, str], tmp_path: Path
) -> None:
    from maskfactory.infra.settings import get_settings

    output = str(tmp_path / "tables")
    found = discover.discover(sources["good"], TASK, tables.TableRef(output, "labels"), "x", "y")
    killed: list[int] = []

    def kill_after_first_batch(done: int, counts: dict[str, int]) -> None:
        # The actor already holds the next batches (Ray Data keeps several in flight per actor).
        if not killed:
            killed.extend(_kill_autolabeler_processes())

    job = labelling.LabelJob(TASK, POLICY, output, "run-kill", batch_size=2)
    counts = labelling.run_labelling(found.todo, set(), job, get_settings(), kill_after_first_batch)
    assert killed, "no AutoLabeler process was found to kill"
    assert sum(counts.values()) == 24
    assert_each_item_once(output, sources["good"])


def test_killing_the_flow_process_and_rerunning_labels_every_item_once(
    prefect_server: None, ray_cluster: None, sources: dict[str, str], tmp_path: Path
) -> None:
    import ray
    from prefect.settings import PREFECT_API_URL

    output = str(tmp_path / "tables")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    command = [
        MASKFACTORY,
        "label",
        "--source",
        sources["good"],
        "--task",
        TASK,
        "--output",
        output,
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if labels_of(output).num_rows >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its flow and anything it started
    proc.wait()
    at_kill = labels_of(output).num_rows
    assert 2 <= at_kill < 24, f"the kill should land mid-run, found {at_kill} rows"
    assert tables.read_table(tables.TableRef(output, "runs")).num_rows == 0  # the run never finished
    rerun = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    left = 24 - at_kill
    assert re.search(rf"labelling {TASK} .* {left}/{left}", rerun.stderr), "no finished progress bar"
    assert_each_item_once(output, sources["good"])
    assert tables.read_table(tables.TableRef(output, "runs"))["skipped"].to_pylist() == [at_kill]


def test_nightly_relabel_merges_items_waiting_for_review(
    prefect_server: None, ray_cluster: None, sources: dict[str, str], tmp_path: Path
) -> None:
    from maskfactory.flows.label_dataset import label_dataset
    from maskfactory.flows.nightly_relabel import nightly_relabel

    output = str(tmp_path / "tables")
    # A threshold of 1.0 sends every labelled item to review: all of them are stale tonight.
    label_dataset(source=sources["mix"], task=TASK, output=output, review_threshold=1.0)
    before = labels_of(output)
    result = nightly_relabel(output=output, review_threshold=0.0)
    after = assert_each_item_once(output, sources["mix"])
    assert result["tasks"][TASK]["auto_accepted"] == 6
    statuses = sorted(after["status"].to_pylist())
    assert statuses.count("auto_accepted") == 6 and statuses.count("error") == 6
    assert set(after["run_id"].to_pylist()) == {result["run_id"], before["run_id"][0].as_py()}


def test_the_demo_labels_the_embedded_default_and_reports_quality(tmp_path: Path) -> None:
    """`maskfactory demo --json` (what `make demo` runs): its own temporary Prefect API and Ray."""
    import json

    out = str(tmp_path / "demo")
    cmd = subprocess.run(
        [MASKFACTORY, "demo", "--out", out, "--n", "4", "--json"], capture_output=True, text=True, timeout=600
    )
    assert cmd.returncode == 0, cmd.stderr[-3000:]
    assert re.search(rf"labelling the demo set .* {4 + len(bad_image_files())}/", cmd.stderr)
    result = json.loads(cmd.stdout)
    assert result["items"] == 4 + len(bad_image_files()) and result["errors"] == len(bad_image_files())
    assert result["auto_accepted"] + result["needs_review"] == 4
    quality = result["quality"]
    assert quality["all"]["items"] == 4 and 0.0 < quality["all"]["mIoU"] <= 1.0
    assert result["tables"]["labels"] == f"{out}/tables/labels" and result["items_per_s"] > 0


def test_bad_parameters_are_refused_before_any_work(
    prefect_server: None, sources: dict[str, str], tmp_path: Path
) -> None:
    from maskfactory.flows.label_dataset import label_dataset

    output = str(tmp_path / "tables")
    with pytest.raises(ValueError, match="review_threshold"):
        label_dataset(source=sources["mix"], task=TASK, output=output, review_threshold=2.0)
    with pytest.raises(ValueError, match="no agent for task"):
        label_dataset(source=sources["mix"], task="cats", output=output)
    with pytest.raises(ValueError, match="no images"):
        label_dataset(source=str(tmp_path), task=TASK, output=output)
    assert not (tmp_path / "tables").exists()
    cmd = subprocess.run(
        [MASKFACTORY, "label", "--source", sources["mix"], "--task", "cats", "--output", output],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cmd.returncode == 2 and "no agent for task" in cmd.stdout
