"""The ``maskfactory`` console script, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from maskfactory.infra import tables

MASKFACTORY = str(Path(sys.executable).with_name("maskfactory"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MASKFACTORY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "table" in out.stdout and "models" in out.stdout
    assert "show" in run("table", "--help").stdout


def test_table_show_on_a_delta_table(storage_root: str) -> None:
    ref = tables.TableRef(storage_root, "runs")
    rows = pa.table({"run_id": [f"run-{i}" for i in range(7)], "items": list(range(7))})
    tables.write_batch(ref, rows, run_id="cli", batch_id=0)
    out = run("table", "show", ref.uri, "--rows", "3")
    assert out.returncode == 0, out.stderr
    assert "delta, version 1" in out.stdout  # version 0 created the empty table
    assert "rows: 7" in out.stdout
    assert "items_per_s" in out.stdout and "double" in out.stdout  # the schema
    assert "run-2" in out.stdout and "run-3" not in out.stdout  # exactly the first three rows


def test_table_show_on_parquet_and_binary_cells(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "mask_rle_counts": [b"x" * 900, b"yy"]}), path)
    out = run("table", "show", str(path))
    assert out.returncode == 0, out.stderr
    assert "(parquet)" in out.stdout and "rows: 2" in out.stdout
    assert "<900 bytes>" in out.stdout  # not 900 bytes of escapes


def test_table_show_on_a_missing_table_fails_clearly(tmp_path: Path) -> None:
    out = run("table", "show", str(tmp_path / "nothing"))
    assert out.returncode == 2
    assert "no such table" in out.stdout


def test_models_list() -> None:
    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    for name in ("vit_h", "vit_l", "vit_b", "tiny-sam", "tiny-clip"):
        assert name in out.stdout


def test_zoo_train_tiny_sam_with_a_zoom_leg(tmp_path: Path) -> None:
    """`--zoom-leg N` goes on from the recipe's run with N steps of zoom crops: the checkpoint is the
    leg's model (not the first schedule's, which the same seed trains without it) and its header
    records the leg's settings. tiny-clip has no such leg."""
    from maskfactory.infra.checkpoints import load_checkpoint, read_header
    from maskfactory.tasks.zoo import train_zoo_model

    with_leg, without = str(tmp_path / "leg.pt"), str(tmp_path / "plain.pt")
    out = run("zoo", "train", "tiny-sam", "--steps", "1", "--pool", "5", "--zoom-leg", "2", "--out", with_leg)
    assert out.returncode == 0, out.stderr
    assert "1 of 1 steps" in out.stdout and "then 2 of 2 zoom-leg steps" in out.stdout
    leg = read_header(with_leg)["extra"]["training"]["zoom_leg"]
    assert (leg["steps_run"], leg["zoom_crop_prob"], leg["lr"]) == (2, 0.5, 2e-4)

    train_zoo_model("tiny-sam", without, pool_size=5, steps=1, zoom_leg=0)
    a, b = load_checkpoint(with_leg).state_dict, load_checkpoint(without).state_dict
    assert any(not torch.equal(a[k], b[k]) for k in a)

    refused = run("zoo", "train", "tiny-clip", "--zoom-leg", "2", "--out", str(tmp_path / "clip.pt"))
    assert refused.returncode == 2 and "tiny-sam only" in refused.stderr


def test_zoo_train_tiny_sam_zoom_leg_settings(tmp_path: Path) -> None:
    """`--zoom-leg-corrections` and `--zoom-leg-ema` change the leg alone (the header records both, the
    recipe keeps its 2 corrections), and a decay of 0 turns the averaging off, as in run 5's leg; a decay
    outside [0, 1) is refused when the settings are made, before any training, and so is a leg setting
    for tiny-clip, which has no leg."""
    from maskfactory.infra.checkpoints import read_header

    out = str(tmp_path / "run5-leg.pt")
    args = ("--steps", "1", "--pool", "5", "--zoom-leg", "2", "--out", out)
    done = run("zoo", "train", "tiny-sam", *args, "--zoom-leg-corrections", "3", "--zoom-leg-ema", "0")
    assert done.returncode == 0, done.stderr
    training = read_header(out)["extra"]["training"]
    assert (training["zoom_leg"]["correction_iters"], training["zoom_leg"]["ema_decay"]) == (3, None)
    assert (training["correction_iters"], training["ema_decay"]) == (2, None)

    bad = str(tmp_path / "bad.pt")
    refused = run("zoo", "train", "tiny-sam", *args[:-1], bad, "--zoom-leg-ema", "1.5")
    assert refused.returncode == 2 and "ema_decay must be in (0, 1), got 1.5" in refused.stdout
    assert not Path(bad).exists()
    no_leg = run("zoo", "train", "tiny-clip", "--zoom-leg-corrections", "4", "--out", bad)
    assert no_leg.returncode == 2 and "need a zoom leg" in no_leg.stdout
