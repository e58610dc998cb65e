"""``maskfactory policy train/eval`` and the ``train-prompt-policy`` flow, end to end on tiny-sam."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import run

from maskfactory.models.alignsam.agent import load_agent
from maskfactory.simulators import datasets
from maskfactory.tasks.policy import evaluate_policy


@pytest.fixture(scope="module")
def saliency_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A 10-image training set (seed 3) and a 4-image held-out set (seed 4)."""
    root = tmp_path_factory.mktemp("policy")
    datasets.write_dataset(str(root / "train"), "saliency", n=10, seed=3)
    datasets.write_dataset(str(root / "test"), "saliency", n=4, seed=4)
    return str(root / "train"), str(root / "test")


@pytest.fixture(scope="module")
def trained(saliency_sets: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    train, _ = saliency_sets
    out = str(tmp_path_factory.mktemp("agent") / "saliency.pt")
    cmd = run("policy", "train", "--task", "saliency", "--data", train, "--shots", "6", "--episodes", "1")
    assert cmd.returncode != 0 and "--out" in cmd.stderr  # the output URI is required
    cmd = run(
        "policy", "train", "--task", "saliency", "--data", train, "--out", "x.pt", "--branch", "semantic"
    )
    assert cmd.returncode == 2 and "branch must be" in cmd.stdout
    cmd = run(
        "policy",
        "train",
        "--task",
        "saliency",
        "--data",
        train,
        "--shots",
        "6",
        "--episodes",
        "1",
        "--out",
        out,
        "--json",
    )
    assert cmd.returncode == 0, cmd.stderr
    return out, json.loads(cmd.stdout)


def test_policy_train_writes_a_versioned_checkpoint_with_validation_figures(
    trained: tuple[str, dict],
) -> None:
    out, summary = trained
    assert Path(out).exists() and len(summary["version"]) == 12
    assert summary["shots"] == 6 and summary["training"]["train_images"] == 6
    assert summary["validation"]["images"] == 4  # the 10 - 6 items the split held back
    assert set(summary["validation"]) >= {"mIoU", "MAE", "BER", "F-beta", "E-measure", "foreground_rate"}
    # The routing confidence is fitted on the same 4 validation items and stored in the checkpoint.
    _, _, extra = load_agent(out)
    assert extra["confidence"]["fitted_on"] == 4 and len(extra["confidence"]["weights"]) == 4


def test_policy_calibrate_refits_the_confidence_and_keeps_the_version(
    saliency_sets: tuple[str, str], trained: tuple[str, dict], tmp_path: Path
) -> None:
    out, summary = trained
    _, test = saliency_sets
    refit = str(tmp_path / "refit.pt")
    cmd = run(
        "policy", "calibrate", "--task", "saliency", "--data", test, "--policy", out, "--out", refit, "--json"
    )
    assert cmd.returncode == 0, cmd.stderr
    result = json.loads(cmd.stdout)
    assert result["items"] == 4 and 0.0 <= result["calibration_error"] <= 1.0
    _, version, extra = load_agent(refit)
    assert version == summary["version"]  # same weights, same version
    assert extra["confidence"] == result["confidence"]
    # The checkpoint names the data and, from its manifest, how it was made (the fixture's call).
    assert extra["confidence_data"] == f"{test} (made by: " + (
        "write_dataset(task='saliency', domain='natural', n=4, seed=4, size=(256, 256), n_objects=None))"
    )
    cmd = run("policy", "calibrate", "--task", "glass", "--data", test, "--policy", out)
    assert cmd.returncode == 2 and "trained for task" in cmd.stdout


def test_policy_eval_prints_the_papers_metrics(
    saliency_sets: tuple[str, str], trained: tuple[str, dict]
) -> None:
    _, test = saliency_sets
    out, summary = trained
    cmd = run(
        "policy",
        "eval",
        "--task",
        "saliency",
        "--data",
        test,
        "--policy",
        out,
        "--ablation",
        "no-rl",
        "--json",
    )
    assert cmd.returncode == 0, cmd.stderr
    result = json.loads(cmd.stdout)
    assert result["policy_version"] == summary["version"] and result["images"] == 4 and result["steps"] == 15
    assert 0 <= result["mIoU"] <= 1 and 0 <= result["foreground_rate"] <= 1 and 0 <= result["BER"] <= 100
    for bad, message in [
        (["--ablation", "no-policy"], "unknown ablation"),
        (["--shots", "50"], "trained with 6 shots"),
        (["--task", "glass"], "trained for task 'saliency'"),
    ]:
        args = ["policy", "eval", "--task", "saliency", "--data", test, "--policy", out, *bad]
        cmd = run(*args)
        assert cmd.returncode == 2 and message in cmd.stdout, (bad, cmd.stdout, cmd.stderr)


def test_the_prompts_do_not_depend_on_the_ground_truth(
    saliency_sets: tuple[str, str], trained: tuple[str, dict], tmp_path: Path
) -> None:
    """Invert every ground-truth mask: the agent's masks and points must not change, so MAE and the
    foreground rate become exactly one minus what they were."""
    _, test = saliency_sets
    out, _ = trained
    before = evaluate_policy("saliency", test, out)
    inverted = tmp_path / "inverted"
    datasets.write_dataset(str(inverted), "saliency", n=4, seed=4)
    for mask in (inverted / "masks").glob("*.png"):
        values = np.asarray(Image.open(mask))
        buffer = io.BytesIO()
        Image.fromarray((255 - values).astype(np.uint8)).save(buffer, format="PNG")
        mask.write_bytes(buffer.getvalue())
    after = evaluate_policy("saliency", str(inverted), out)
    assert after["MAE"] == pytest.approx(1 - before["MAE"])
    assert after["foreground_rate"] == pytest.approx(1 - before["foreground_rate"])


def test_the_train_prompt_policy_flow(
    prefect_server: None, saliency_sets: tuple[str, str], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from maskfactory.flows.train_prompt_policy import train_prompt_policy

    train, _ = saliency_sets
    out = str(tmp_path / "flow.pt")
    result = train_prompt_policy("saliency", train, out, shots=6, episodes=2, branch="implicit")
    assert Path(out).exists() and result["training"]["episode"] == 2
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["alignsam-saliency-validation"]))
        )
        progress = [a for a in client.read_artifacts() if a.type == "progress"]
    assert artifacts and {row["figure"] for row in json.loads(artifacts[0].data)} >= {
        "mIoU",
        "foreground_rate",
    }
    assert any(a.data == 100.0 for a in progress)
    with pytest.raises(ValueError, match="branch"):
        train_prompt_policy("saliency", train, out, branch="semantic")
