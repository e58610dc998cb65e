"""Steps 2-4 of ``label-dataset``: label items on a pool of Ray actors, route them, write them once.

``AutoLabeler`` is one worker: it loads SAM, the task's AlignSAM agent (and CLIP for an
explicit-branch agent) once, then turns a batch of items into ``labels`` rows: decode, one encoder
pass per image, T prompting steps with every image's decoder calls together, the routing confidence,
and COCO RLE. It is plain Python; ``label_batches`` runs it on Ray Data with an actor pool
(``map_batches`` + ``ActorPoolStrategy``), which streams batches with back-pressure, restarts a
killed actor and retries its batch.

Exactly once. A batch reaches the table only as one Delta commit whose id is derived from its items
(``write_labels``), and the driver drops rows of items it already wrote in this run, so a batch that
Ray re-runs after an actor died, or hands over twice, lands once. A rerun after the whole process
died skips what is committed (``discover``). Nothing is written from inside an actor.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from maskfactory.infra import masks, tables
from maskfactory.infra.images import MAX_PIXELS, ImageError, ImageErrorReason, read_image
from maskfactory.infra.ray_runtime import ensure_ray
from maskfactory.infra.settings import Settings, get_settings
from maskfactory.models import confidence
from maskfactory.models.alignsam.agent import load_agent
from maskfactory.models.alignsam.prompter import Prompter
from maskfactory.models.clip_surgery import ClipSurgery
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import load_clip_model, load_sam_model
from maskfactory.models.sam import preprocess_shape
from maskfactory.tasks.discover import Item

# An image whose shorter side would be under this many pixels at SAM's input (after the longer side
# is resized to it) has nothing a 16x16-patch encoder can see; it becomes an error row.
MIN_INPUT_SIDE = 8
LABEL_KEY = ("item_id", "task")  # one labels row per item and task

# Someone watching a run in this process (the CLI's progress bar) listens here; a served deployment
# has no terminal, and shows the Prefect progress artifact instead.
_progress_listener: ContextVar[Callable[[int, int], None] | None] = ContextVar("label_progress", default=None)


@contextmanager
def progress_listener(listener: Callable[[int, int], None]) -> Iterator[None]:
    """Call ``listener(done, total)`` (items) as ``label_items`` runs in this context."""
    token = _progress_listener.set(listener)
    try:
        yield
    finally:
        _progress_listener.reset(token)


def versions(policy: str, settings: Settings | None = None) -> tuple[str, str]:
    """(sam_version, policy_version) a labeller built from ``policy`` stamps on its rows."""
    agent, policy_version, _ = load_agent(policy, settings)
    _, sam_version = load_sam_model(agent.config.sam_model, None, settings)
    return sam_version, policy_version


class AutoLabeler:
    """Labels batches of items for one task with one agent; models are loaded once per worker."""

    def __init__(
        self,
        task: str,
        policy: str,
        run_id: str,
        settings: dict[str, Any] | None = None,
        threads: int | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        """``settings``: a ``Settings`` dump (workers on a cluster do not share the driver's
        environment); ``threads``: torch's intra-op threads in this worker."""
        if threads:
            torch.set_num_threads(threads)
        self.settings = Settings(**settings) if settings is not None else Settings()
        self.task, self.run_id, self.max_pixels = task, run_id, max_pixels
        agent, self.policy_version, extra = load_agent(policy, self.settings)
        if agent.config.task != task:
            raise ValueError(f"{policy} was trained for task {agent.config.task!r}, not {task!r}")
        if "confidence" not in extra:
            raise ValueError(
                f"{policy} carries no fitted confidence model; fit one with `maskfactory policy calibrate`"
            )
        self.confidence = confidence.ConfidenceModel.from_dict(extra["confidence"])
        sam, self.sam_version = load_sam_model(agent.config.sam_model, None, self.settings)
        self.predictor = BatchedSamPredictor(sam)
        self.prompter = Prompter(self.predictor, agent)
        self.surgery = (
            ClipSurgery(load_clip_model(agent.config.clip_model, None, self.settings))
            if agent.config.explicit
            else None
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """A batch of items (columns item_id, uri, prompt) -> its ``labels`` rows, status unrouted
        (null) except ``error``."""
        items = [Item(**row) for row in batch.to_pylist()]
        rows: list[dict[str, Any] | None] = [None] * len(items)
        images, good = [], []
        for k, item in enumerate(items):
            try:
                image = read_image(item.uri, max_pixels=self.max_pixels, settings=self.settings)
                self._check_shape(image, item.uri)
            except ImageError as e:
                rows[k] = self._row(item, status="error", error=f"{e.reason}: {e.detail}")
                continue
            images.append(image)
            good.append(k)
        if images:
            for k, row in zip(good, self._label([items[k] for k in good], images), strict=True):
                rows[k] = row
        return pa.Table.from_pylist(rows, schema=tables.LABELS)  # absent fields become nulls

    def _check_shape(self, image: np.ndarray, uri: str) -> None:
        h, w = image.shape[:2]
        if min(preprocess_shape(h, w, self.predictor.image_size)) < MIN_INPUT_SIDE:
            raise ImageError(ImageErrorReason.TOO_THIN, uri, f"{w}x{h}: too thin to segment")

    @torch.no_grad()
    def _label(self, items: Sequence[Item], images: list[np.ndarray]) -> list[dict[str, Any]]:
        embeddings = self.predictor.encode(images)
        text_maps = None
        if self.surgery is not None:
            frame = self.predictor.image_size
            text_maps = self.surgery.sam_frame_maps(
                images,
                [it.prompt or self.task for it in items],
                embeddings.input_sizes,
                frame,
                4 * embeddings.features.shape[-1],
            )
        result = self.prompter(embeddings, text_maps)
        signals = confidence.signals(result, embeddings.input_sizes, self.predictor.image_size)
        scores = self.confidence.predict(signals)
        rles = [masks.encode(m) for m in result.masks]
        rows = []
        for k, (item, rle) in enumerate(zip(items, rles, strict=True)):
            prompts = [
                {"x": float(x), "y": float(y), "label": int(label)}
                for (x, y), label in zip(result.points[k].tolist(), result.labels[k].tolist(), strict=True)
            ]
            rows.append(
                self._row(
                    item,
                    width=images[k].shape[1],
                    height=images[k].shape[0],
                    mask_rle_size=list(rle.size),
                    mask_rle_counts=rle.counts,
                    bbox=list(masks.bbox(rle)),
                    area=masks.area(rle),
                    prompts=prompts,
                    predicted_iou=float(result.iou_prediction[k]),
                    stability=float(result.stability[k]),
                    confidence=float(scores[k]),
                )
            )
        return rows

    def _row(self, item: Item, **fields: Any) -> dict[str, Any]:
        return {
            "item_id": item.item_id,
            "uri": item.uri,
            "task": self.task,
            "source": "auto",
            "sam_version": self.sam_version,
            "policy_version": self.policy_version,
            "run_id": self.run_id,
            "labelled_at": datetime.now(UTC),
            **fields,
        }


def route(rows: pa.Table, review_threshold: float) -> pa.Table:
    """Set ``status``: error rows stay errors; confidence >= threshold is auto-accepted, else review."""
    accepted = pc.greater_equal(rows["confidence"], pa.scalar(review_threshold, pa.float32()))
    routed = pc.if_else(accepted, "auto_accepted", "needs_review")
    status = pc.if_else(pc.is_null(rows["status"]), routed, rows["status"])
    return rows.set_column(rows.schema.get_field_index("status"), "status", status)


def batch_id(rows: pa.Table) -> str:
    """A batch's id from its items: the same items always make the same commit id."""
    return hashlib.sha256("\n".join(sorted(rows["item_id"].to_pylist())).encode()).hexdigest()[:20]


def write_labels(
    ref: tables.TableRef, rows: pa.Table, run_id: str, written: set[str], relabel: set[str]
) -> pa.Table:
    """Commit the rows of items not yet in ``written`` (updated in place) as one batch; returns them.

    Items in ``relabel`` already have a row (from older model versions), so such a batch is merged
    on (item_id, task); otherwise it is appended.
    """
    fresh = rows.filter(pa.array([i not in written for i in rows["item_id"].to_pylist()], pa.bool_()))
    if fresh.num_rows == 0:
        return fresh
    ids = fresh["item_id"].to_pylist()
    merge_on = LABEL_KEY if relabel.intersection(ids) else ()
    tables.write_batch(ref, fresh, run_id=run_id, batch_id=batch_id(fresh), merge_on=merge_on)
    written.update(ids)
    return fresh


@dataclass(frozen=True)
class LabelJob:
    """One run of the labelling stage: which agent labels for which task, where rows go, how."""

    task: str
    policy: str  # agent checkpoint URI
    output: str  # table root
    run_id: str
    review_threshold: float = 0.5
    batch_size: int = 16
    num_actors: int = 1
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_threshold <= 1.0:
            raise ValueError(f"review_threshold must be in [0, 1], got {self.review_threshold}")
        if self.batch_size < 1 or self.num_actors < 1:
            raise ValueError(
                f"batch_size and num_actors must be >= 1, got {self.batch_size}, {self.num_actors}"
            )
        if self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor}")


def label_batches(items: Sequence[Item], job: LabelJob, settings: Settings) -> Iterator[pa.Table]:
    """Label ``items`` on ``job.num_actors`` Ray actors; yields each batch's rows as it finishes.

    Ray must be initialised (``infra.ray_runtime.ensure_ray``). Each CPU actor asks for a share of
    the cluster's CPUs that leaves some free, so the driver's own tasks are never starved.
    """
    import ray  # the models above stay importable and testable without Ray

    # Our own progress (Prefect artifact, log lines) replaces Ray Data's bars, which flood logs.
    ray.data.DataContext.get_current().enable_progress_bars = False
    cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
    gpu = job.gpus_per_actor > 0
    cpus = 1.0 if gpu else min(1.0, 0.9 * cluster_cpus / job.num_actors)
    threads = None if gpu else max(1, int(cluster_cpus // job.num_actors))
    # One input block per batch, so each actor call is one batch and each commit one batch.
    data = ray.data.from_items(
        [{"item_id": i.item_id, "uri": i.uri, "prompt": i.prompt} for i in items],
        override_num_blocks=math.ceil(len(items) / job.batch_size),
    )
    labelled = data.map_batches(
        AutoLabeler,
        fn_constructor_kwargs={
            "task": job.task,
            "policy": job.policy,
            "run_id": job.run_id,
            "settings": settings.model_dump(),
            "threads": threads,
        },
        batch_size=job.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=job.num_actors),
        num_cpus=cpus,
        num_gpus=job.gpus_per_actor,
    )
    yield from labelled.iter_batches(batch_size=None, batch_format="pyarrow")


def no_counts() -> dict[str, int]:
    return {"auto_accepted": 0, "needs_review": 0, "error": 0}


def run_labelling(
    items: Sequence[Item],
    relabel: set[str],
    job: LabelJob,
    settings: Settings,
    progress: Callable[[int, dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Label, route and commit ``items`` into ``job.output``'s labels table; returns status counts.

    ``relabel``: item ids that already have a row (merged, not appended). ``progress(done, counts)``
    is called after each committed batch.
    """
    ref = tables.TableRef(job.output, "labels", settings)
    counts = no_counts()
    written: set[str] = set()
    for rows in label_batches(items, job, settings):
        committed = write_labels(ref, route(rows, job.review_threshold), job.run_id, written, relabel)
        for status in committed["status"].to_pylist():
            counts[status] += 1
        if progress:
            progress(len(written), counts)
    return counts


@task(name="label-items", cache_policy=NO_CACHE)
def label_items(items: list[Item], relabel: set[str], job: LabelJob) -> dict[str, int]:
    """The Prefect task both labelling flows run: the Ray stage, with a progress artifact."""
    artifact = create_progress_artifact(0.0, description=f"{job.task}: items labelled")
    listener = _progress_listener.get()

    def progress(done: int, counts: dict[str, int]) -> None:
        update_progress_artifact(artifact, 100.0 * done / len(items))
        print(f"{done}/{len(items)} labelled: {counts}")
        if listener:
            listener(done, len(items))

    if not items:
        return no_counts()
    if listener:
        listener(0, len(items))
    ensure_ray()
    return run_labelling(items, relabel, job, get_settings(), progress)


def run_row(
    flow: str,
    job: LabelJob,
    counts: dict[str, int],
    skipped: int,
    started: datetime,
    seconds: float,
    versions: tuple[str, str],
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """The ``runs`` row of one flow run over one task (``versions``: SAM's and the policy's)."""
    items = sum(counts.values())
    return {
        "run_id": job.run_id,
        "flow": flow,
        "task": job.task,
        "parameters": json.dumps(parameters),
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "items": items,
        "skipped": skipped,
        "auto_accepted": counts["auto_accepted"],
        "needs_review": counts["needs_review"],
        "errors": counts["error"],
        "duration_s": seconds,
        "items_per_s": items / seconds,
        "sam_version": versions[0],
        "policy_version": versions[1],
    }


def record_run(output: str, settings: Settings, row: dict[str, Any]) -> None:
    """Write the run's row to the ``runs`` table (once per run id and task)."""
    ref = tables.TableRef(output, "runs", settings)
    tables.write_batch(
        ref,
        pa.Table.from_pylist([row], schema=tables.RUNS),
        run_id=row["run_id"],
        batch_id=f"summary:{row['task']}",
    )
