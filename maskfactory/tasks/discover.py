"""Step 1 of ``label-dataset``: find the items of a source and drop those already labelled.

A source is a folder or prefix (every image file under it, recursively) or a manifest: a Parquet
file with an ``image_uri`` (or ``uri``) column and, optionally, ``prompt`` and ``task`` columns
(``maskfactory world make`` writes one). Each item gets a stable ``item_id``: a hash of its URI and
its bytes, so a file replaced under the same name is a new item, and a copy under another name too.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.compute as pc
import pyarrow.parquet as pq

from maskfactory.infra import storage, tables
from maskfactory.infra.settings import Settings

# What a folder listing counts as an image. Anything else (sidecar JSON, manifests) is not an item;
# a file with an image suffix that does not decode becomes an error row, not a silent skip.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Reading bytes for ids is I/O-bound (S3 round trips); threads overlap the waits.
READ_THREADS = 16


@dataclass(frozen=True)
class Item:
    item_id: str
    uri: str
    # The text prompt of explicit-branch agents; None: the task's name, which names the target for
    # shadow but not for semantic (a semantic source needs a manifest with prompts).
    prompt: str | None = None


@dataclass
class Discovered:
    todo: list[Item]  # to label in this run
    relabel: set[str]  # item_ids among ``todo`` already in the labels table (older versions)
    skipped: int  # already labelled by the same model versions


def item_id(uri: str, data: bytes | None) -> str:
    """20 hex digits of SHA-256 over the normalised URI and the bytes (None: unreadable, URI only)."""
    h = hashlib.sha256(storage.normalize(uri).encode())
    if data is not None:
        h.update(b"\0")
        h.update(data)
    return h.hexdigest()[:20]


def list_source(source: str, settings: Settings | None = None) -> list[tuple[str, str | None]]:
    """(URI, prompt) of every item of ``source``, in a stable order. Raises if there are none."""
    if source.endswith(".parquet"):
        manifest = pq.read_table(io.BytesIO(storage.read_bytes(source, settings)))
        column = next((c for c in ("image_uri", "uri") if c in manifest.column_names), None)
        if column is None:
            raise ValueError(f"{source}: a manifest needs an 'image_uri' or 'uri' column")
        uris = [str(u) for u in manifest.column(column).to_pylist()]
        prompts = (
            manifest.column("prompt").to_pylist() if "prompt" in manifest.column_names else [None] * len(uris)
        )
        found = list(zip(uris, prompts, strict=True))
    else:
        fs, path = storage.filesystem(source, settings)
        if not fs.exists(path):
            raise FileNotFoundError(f"source {source} does not exist")
        files = sorted(fs.find(path))
        base = storage.normalize(source)
        found = [
            (storage.join(base, os.path.relpath(f, path)) if storage.is_s3(base) else f, None)
            for f in files
            if f.lower().endswith(IMAGE_SUFFIXES) and not os.path.basename(f).startswith(".")
        ]
    if not found:
        raise ValueError(f"source {source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _identify(uri: str, settings: Settings | None) -> str:
    try:
        data = storage.read_bytes(uri, settings)
    except (OSError, ValueError):
        data = None  # unreadable now: the labelling stage records why, as an error row
    return item_id(uri, data)


def discover(
    source: str,
    task: str,
    labels: tables.TableRef,
    sam_version: str,
    policy_version: str,
    limit: int | None = None,
    settings: Settings | None = None,
) -> Discovered:
    """Items of ``source`` (the first ``limit``) that ``labels`` has no row for with these versions."""
    found = list_source(source, settings)[:limit]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        ids = list(pool.map(lambda f: _identify(f[0], settings), found))
    done = tables.read_table(labels, ["item_id", "task", "sam_version", "policy_version"])
    done = done.filter(pc.equal(done["task"], task))
    current = {
        i
        for i, s, p in zip(
            done["item_id"].to_pylist(),
            done["sam_version"].to_pylist(),
            done["policy_version"].to_pylist(),
            strict=True,
        )
        if s == sam_version and p == policy_version
    }
    older = set(done["item_id"].to_pylist()) - current
    todo, seen = [], set()
    for (uri, prompt), i in zip(found, ids, strict=True):
        if i in current or i in seen:  # the same file listed twice is one item
            continue
        seen.add(i)
        todo.append(Item(i, uri, prompt))
    return Discovered(todo, {it.item_id for it in todo} & older, len(found) - len(todo))
