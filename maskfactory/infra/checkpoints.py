"""Checkpoints: a torch state dict behind a small JSON header, saved to and loaded from any URI.

File layout::

    b"MASKFACTORY-CKPT\\n"          magic, 17 bytes
    uint64 little-endian            length of the header in bytes
    header                          UTF-8 JSON: {"kind", "config", "version", "format", ...}
    payload                         torch.save(state_dict)

The header comes first so a registry or the CLI can read a checkpoint's kind, config and version with
one small ranged read, without fetching hundreds of MB of weights from S3.

``version`` is a content hash of kind, config and every tensor (name, dtype, shape, bytes): two
checkpoints with the same version are the same model, whoever trained them. Tables record it.

Loading also accepts *official* checkpoints (a bare ``torch.save(state_dict)``, as SAM and open_clip
ship them); those have no header, so their version is the hash of their tensors.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import torch

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings

MAGIC = b"MASKFACTORY-CKPT\n"
FORMAT = 1
_LEN = struct.Struct("<Q")


@dataclass
class Checkpoint:
    """A loaded checkpoint: what it is (``kind``), how to build it (``config``) and its weights."""

    kind: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. validation metrics, training seed


def state_dict_hash(state_dict: dict[str, torch.Tensor], *, prefix: bytes = b"") -> str:
    """12 hex digits of SHA-256 over ``prefix`` and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(prefix)
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # uint8 view: numpy has no bfloat16, and we want the raw bytes of any dtype.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def compute_version(kind: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    prefix = json.dumps({"kind": kind, "config": config}, sort_keys=True).encode()
    return state_dict_hash(state_dict, prefix=prefix)


def save_checkpoint(
    uri: str,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    *,
    extra: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """Write a checkpoint to ``uri`` and return its version hash. ``config`` and ``extra`` must be JSON."""
    state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
    version = compute_version(kind, config, state_dict)
    header = json.dumps(
        {"format": FORMAT, "kind": kind, "config": config, "version": version, "extra": extra or {}},
        sort_keys=True,
    ).encode()
    payload = io.BytesIO()
    torch.save(state_dict, payload)
    storage.write_bytes(uri, MAGIC + _LEN.pack(len(header)) + header + payload.getvalue(), settings)
    return version


def read_header(uri: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The JSON header of a maskfactory checkpoint, or None for an official (headerless) file."""
    with storage.open_uri(uri, "rb", settings) as f:
        head = f.read(len(MAGIC) + _LEN.size)
        if not head.startswith(MAGIC):
            return None
        (n,) = _LEN.unpack(head[len(MAGIC) :])
        return json.loads(f.read(n))


def load_checkpoint(uri: str, settings: Settings | None = None, map_location: str = "cpu") -> Checkpoint:
    """Load a maskfactory checkpoint, or an official bare state dict (kind ``"state_dict"``).

    Always loads with ``map_location`` (GPU-saved files must open on a CPU machine) and
    ``weights_only=True`` (a checkpoint from a URI must not be able to run code).
    """
    data = storage.read_bytes(uri, settings)
    if data.startswith(MAGIC):
        (n,) = _LEN.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _LEN.size
        header = json.loads(data[start : start + n])
        if header.get("format") != FORMAT:
            raise ValueError(f"{uri}: checkpoint format {header.get('format')} is not {FORMAT}")
        state_dict = _torch_load(data[start + n :], map_location)
        return Checkpoint(header["kind"], header["config"], state_dict, header["version"], header["extra"])
    state_dict = _torch_load(data, map_location)
    # Some official files wrap the weights (open_clip training checkpoints: {"state_dict": ..., "epoch"}).
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    return Checkpoint("state_dict", {}, state_dict, state_dict_hash(state_dict))


def _torch_load(data: bytes, map_location: str) -> dict[str, Any]:
    obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    return obj
