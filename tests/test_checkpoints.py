"""Checkpoints: header + state dict on any URI, content versions, official files, and safe loading."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from maskfactory.infra import storage
from maskfactory.infra.checkpoints import load_checkpoint, read_header, save_checkpoint, state_dict_hash


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(7),
    }


def test_round_trip_on_any_storage(storage_root: str) -> None:
    uri = storage.join(storage_root, "ckpt", "policy.pt")
    version = save_checkpoint(uri, "policy", {"grid": 10, "task": "shadow"}, weights(0), extra={"miou": 0.71})
    header = read_header(uri)
    assert header is not None
    assert (header["kind"], header["config"], header["version"], header["extra"]) == (
        "policy",
        {"grid": 10, "task": "shadow"},
        version,
        {"miou": 0.71},
    )
    ckpt = load_checkpoint(uri)
    assert (ckpt.kind, ckpt.version, ckpt.extra) == ("policy", version, {"miou": 0.71})
    for k, v in weights(0).items():
        assert torch.equal(ckpt.state_dict[k], v) and ckpt.state_dict[k].dtype == v.dtype


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    a = save_checkpoint(str(tmp_path / "a.pt"), "policy", {"grid": 10}, weights(0))
    b = save_checkpoint(str(tmp_path / "b.pt"), "policy", {"grid": 10}, weights(0))
    assert a == b  # same content, same version, whoever saved it
    assert a != save_checkpoint(str(tmp_path / "c.pt"), "policy", {"grid": 10}, weights(1))
    assert a != save_checkpoint(str(tmp_path / "d.pt"), "policy", {"grid": 8}, weights(0))
    assert a != save_checkpoint(str(tmp_path / "e.pt"), "srm", {"grid": 10}, weights(0))


def test_official_bare_state_dicts_load(tmp_path: Path) -> None:
    path = tmp_path / "official.pth"
    torch.save(weights(3), path)
    ckpt = load_checkpoint(str(path))
    assert ckpt.kind == "state_dict" and read_header(str(path)) is None
    assert ckpt.version == state_dict_hash(weights(3))
    # open_clip training checkpoints wrap the weights.
    torch.save({"epoch": 3, "state_dict": weights(3)}, path)
    assert load_checkpoint(str(path)).version == ckpt.version


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"weights": _RunsCode()}, buf)
    storage.write_bytes(str(tmp_path / "evil.pth"), buf.getvalue())
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|Unsupported global"):
        load_checkpoint(str(tmp_path / "evil.pth"))


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        load_checkpoint(str(tmp_path / "list.pth"))
