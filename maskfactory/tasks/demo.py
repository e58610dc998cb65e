"""``maskfactory demo``: the label job on the embedded default, with nothing but this repository.

Generates a labelled synthetic image set (plus a few broken files), runs the ``label-dataset`` flow
on it through Prefect (a temporary local API unless ``PREFECT_API_URL`` names a server) and a local
Ray cluster, with the bundled tiny-sam and the zoo agent, then scores what came out against the
ground truth the generator kept: the quality of auto-accepted against needs-review items is what
routing is for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskfactory.infra import masks, storage, tables
from maskfactory.infra.settings import Settings, get_settings
from maskfactory.models import metrics
from maskfactory.simulators import datasets
from maskfactory.simulators.bad_images import write_bad_images

# blur: the zoo agent whose confidence splits the set, so that routing has both sides to show. Until
# 2026-12-06 this was saliency, whose agent on tiny-sam run 9 auto-accepts all 40 demo items (blur's: 24
# at mIoU 0.94, 16 to review at 0.60; benchmarks/RESULTS.md, "Tiny-sam run 9"). The agent was trained on
# dataset seed 0 and calibrated on seed 5.
DEMO_TASK = "blur"
DEMO_SEED = 3


def label_quality(output: str, data: str, settings: Settings | None = None) -> dict[str, Any]:
    """mIoU of the labels in ``output`` against the ground-truth masks of dataset ``data``, per status.

    Items are matched by URI; labels of items the dataset does not know (broken files) are not scored.
    Returns {status: {"items": n, "mIoU": mean IoU}} plus "all" over every scored label.
    """
    truth = {r["image_uri"]: r["mask_uri"] for r in datasets.read_manifest(data, settings).to_pylist()}
    rows = tables.read_table(tables.TableRef(output, "labels", settings)).to_pylist()
    ious: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "error" or row["uri"] not in truth:
            continue
        gt = datasets.read_mask(truth[row["uri"]], settings)
        label = masks.decode(masks.RLE(row["mask_rle_size"], row["mask_rle_counts"]))
        iou = metrics.mask_iou(label, gt)
        ious.setdefault(row["status"], []).append(iou)
        ious.setdefault("all", []).append(iou)
    return {k: {"items": len(v), "mIoU": float(np.mean(v))} for k, v in sorted(ious.items())}


def run_demo(
    out: str = "./maskfactory-demo", n: int = 40, batch_size: int = 8, num_actors: int = 1
) -> dict[str, Any]:
    """Generate (once) ``n`` images under ``out``/data, label them into ``out``/tables, score them.

    A second run finds everything labelled and skips it (the flow is idempotent); the quality
    figures are always computed over the whole table.
    """
    from maskfactory.flows.label_dataset import label_dataset  # Prefect only when a demo runs

    settings = get_settings()
    data, output = storage.join(out, "data"), storage.join(out, "tables")
    if not storage.exists(storage.join(data, "manifest.parquet"), settings):
        datasets.write_dataset(data, DEMO_TASK, n=n, seed=DEMO_SEED, settings=settings)
        write_bad_images(storage.join(data, "images"), settings)
    result = label_dataset(
        source=storage.join(data, "images"),
        task=DEMO_TASK,
        output=output,
        batch_size=batch_size,
        num_actors=num_actors,
    )
    return {
        **result,
        "quality": label_quality(output, data, settings),
        "tables": {name: storage.join(output, name) for name in ("labels", "runs")},
    }
