"""The four Delta tables (``labels``, ``reviews``, ``frame_rankings``, ``runs``) and idempotent batch writes.

Each table lives at ``<root>/<name>`` on local disk or S3. Schemas are defined once, here, as Arrow
schemas in the types Delta stores natively (so what you read back is what you declared).

Idempotency. Every batch commit carries a Delta *application transaction* (``txn`` action) whose id is
``maskfactory:<table>:<run_id>:<batch_id>``. Writing a batch is a loop:

1. load the latest table version and look the id up; if it is there, the batch is already in: stop;
2. write the batch's Parquet files and commit them with that ``txn`` action;
3. if the commit is refused, go back to 1.

Commits are create-only (a local rename that refuses to overwrite, or an S3 PUT with ``If-None-Match``),
so two writers never both take a version. A writer that loses the race is rebased by delta-rs onto the
new version, unless the winner committed the same ``txn`` id: the Delta protocol calls that a concurrent
transaction and refuses it, and step 1 then finds the batch committed. So the same batch written twice,
even at the same instant, lands once, and different batches written at once all land. A crash before
the commit leaves only unreferenced Parquet files, which readers never see (``vacuum`` removes them).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings

# A point prompt or click: pixel coordinates in the original image, label 1 = positive, 0 = negative.
POINT = pa.struct([("x", pa.float32()), ("y", pa.float32()), ("label", pa.int8())])
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

LABELS = pa.schema(
    [
        ("item_id", pa.string()),
        ("uri", pa.string()),
        ("task", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        # COCO RLE: size is [height, width]; counts is pycocotools' compressed string as bytes.
        # Delta has no fixed-size lists, so size and bbox are lists of length 2 and 4.
        ("mask_rle_size", pa.list_(pa.int32())),
        ("mask_rle_counts", pa.binary()),
        ("bbox", pa.list_(pa.float64())),  # COCO [x, y, w, h] in pixels
        ("area", pa.int64()),  # foreground pixels
        ("prompts", pa.list_(POINT)),
        ("predicted_iou", pa.float32()),
        ("stability", pa.float32()),
        ("confidence", pa.float32()),
        ("status", pa.string()),  # auto_accepted | needs_review | reviewed | rejected | error
        ("error", pa.string()),  # reason code and message when status == error
        ("source", pa.string()),  # auto | human_accepted | human_corrected
        ("sam_version", pa.string()),
        ("policy_version", pa.string()),
        ("adapter_version", pa.string()),
        ("run_id", pa.string()),
        ("labelled_at", UTC_TIMESTAMP),
    ]
)

REVIEWS = pa.schema(
    [
        ("review_id", pa.string()),
        ("item_id", pa.string()),
        ("task", pa.string()),
        ("reviewer", pa.string()),
        ("clicks", pa.list_(POINT)),
        ("mask_rle_size", pa.list_(pa.int32())),
        ("mask_rle_counts", pa.binary()),
        ("decision", pa.string()),  # accepted | corrected | rejected
        ("claimed_at", UTC_TIMESTAMP),
        ("decided_at", UTC_TIMESTAMP),
        ("duration_s", pa.float64()),
        ("adapter_version", pa.string()),
    ]
)

FRAME_RANKINGS = pa.schema(
    [
        ("video_id", pa.string()),
        ("round", pa.int32()),
        ("frame_index", pa.int32()),
        ("q_value", pa.float32()),
        ("predicted_quality", pa.float32()),  # predicted J&F of the propagated mask, 0..1
        ("rank", pa.int32()),  # 0 = recommend first
        ("recommender_version", pa.string()),
        ("quality_version", pa.string()),
        ("run_id", pa.string()),
        ("ranked_at", UTC_TIMESTAMP),
    ]
)

RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("flow", pa.string()),
        ("task", pa.string()),
        ("parameters", pa.string()),  # JSON
        ("started_at", UTC_TIMESTAMP),
        ("finished_at", UTC_TIMESTAMP),
        ("items", pa.int64()),
        ("skipped", pa.int64()),
        ("auto_accepted", pa.int64()),
        ("needs_review", pa.int64()),
        ("errors", pa.int64()),
        ("duration_s", pa.float64()),
        ("items_per_s", pa.float64()),
        ("sam_version", pa.string()),
        ("policy_version", pa.string()),
        ("adapter_version", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "labels": LABELS,
    "reviews": REVIEWS,
    "frame_rankings": FRAME_RANKINGS,
    "runs": RUNS,
}


class BatchWriteError(RuntimeError):
    """A batch could not be committed after every retry; nothing of it is visible in the table."""


@dataclass(frozen=True)
class TableRef:
    """Where one table lives: ``root`` (a storage URI) and the table ``name``."""

    root: str
    name: str
    settings: Settings | None = None

    def __post_init__(self) -> None:
        if self.name not in SCHEMAS:
            raise ValueError(f"unknown table {self.name!r}; known: {sorted(SCHEMAS)}")

    @property
    def uri(self) -> str:
        return storage.join(self.root, self.name)

    @property
    def schema(self) -> pa.Schema:
        return SCHEMAS[self.name]

    @property
    def storage_options(self) -> dict[str, str]:
        return storage.delta_options(self.uri, self.settings)


def open_table(ref: TableRef, *, create: bool = True) -> DeltaTable:
    """Load the table at its latest version, creating it empty (with its schema) if it is missing."""
    try:
        return DeltaTable(ref.uri, storage_options=ref.storage_options)
    except TableNotFoundError:
        if not create:
            raise
    # Two processes may create the same table at once; version 0 is create-only, so one wins and
    # the other fails here and simply loads what the winner made.
    with contextlib.suppress(CommitFailedError):
        DeltaTable.create(ref.uri, ref.schema, mode="ignore", storage_options=ref.storage_options)
    return DeltaTable(ref.uri, storage_options=ref.storage_options)


def batch_app_id(ref: TableRef, run_id: str, batch_id: str | int) -> str:
    return f"maskfactory:{ref.name}:{run_id}:{batch_id}"


def batch_commit_properties(app_id: str) -> CommitProperties:
    """The commit of one batch: its ``txn`` action (version 1: a batch is written once, never updated)."""
    return CommitProperties(
        app_transactions=[Transaction(app_id=app_id, version=1)],
        custom_metadata={"maskfactory.batch": app_id},
    )


def batch_committed(ref: TableRef, run_id: str, batch_id: str | int) -> bool:
    """Whether the batch's commit is already in the table."""
    dt = open_table(ref)
    return dt.transaction_version(batch_app_id(ref, run_id, batch_id)) is not None


def write_batch(
    ref: TableRef,
    rows: pa.Table,
    *,
    run_id: str,
    batch_id: str | int,
    merge_on: tuple[str, ...] = (),
    max_attempts: int = 50,
    storage_attempts: int = 3,
) -> bool:
    """Write ``rows`` as one commit, exactly once per ``(run_id, batch_id)``.

    By default the rows are appended. With ``merge_on`` (key columns, e.g. ``("item_id", "task")``)
    they are merged instead: a row replaces the table's row with the same key, or is inserted; the
    ``labels`` table keeps one row per item and task this way when items are relabelled.

    Returns True if this call committed the batch, False if it was already in the table.
    ``rows`` is cast to the table's schema (missing nullable columns become nulls); a column the
    schema does not know is an error, so a typo cannot silently drop data.

    Storage errors (S3 unreachable, throttled, 5xx) are retried ``storage_attempts`` times with
    backoff and then raised as :class:`BatchWriteError`; a failed commit leaves nothing visible.
    """
    data = conform(rows, ref.schema)
    app_id = batch_app_id(ref, run_id, batch_id)
    storage_failures = 0
    for attempt in range(max_attempts):
        try:
            dt = open_table(ref)
            if dt.transaction_version(app_id) is not None:
                return False
            _commit(dt, data, app_id, merge_on)
            return True
        except CommitFailedError:
            # Refused: most likely a retry of this very batch committed first. Back off a little
            # (with jitter, so racing writers spread out) and re-check.
            time.sleep(min(0.05 * 2**attempt, 2.0) * random.random())
        except OSError as exc:
            # delta-rs reports storage failures as OSError (after its own retries of each request);
            # schema and protocol errors are DeltaErrors and propagate at once.
            storage_failures += 1
            if storage_failures >= storage_attempts:
                raise BatchWriteError(f"{app_id}: storage failed {storage_failures} times: {exc}") from exc
            time.sleep(0.5 * 2**storage_failures)
    raise BatchWriteError(f"{app_id}: not committed after {max_attempts} attempts")


def _commit(dt: DeltaTable, data: pa.Table, app_id: str, merge_on: tuple[str, ...]) -> None:
    properties = batch_commit_properties(app_id)
    if not merge_on:
        write_deltalake(dt, data, mode="append", commit_properties=properties)
        return
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in merge_on)
    merger = dt.merge(data, predicate, source_alias="s", target_alias="t", commit_properties=properties)
    merger.when_matched_update_all().when_not_matched_insert_all().execute()


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order and cast ``rows``' columns to ``schema``, filling absent columns with nulls."""
    unknown = set(rows.column_names) - set(schema.names)
    if unknown:
        raise ValueError(f"columns not in the schema: {sorted(unknown)}")
    columns = [
        rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def read_table(ref: TableRef, columns: list[str] | None = None) -> pa.Table:
    """The table's current rows (an empty table with the schema if it does not exist yet)."""
    try:
        dt = DeltaTable(ref.uri, storage_options=ref.storage_options)
    except TableNotFoundError:
        return ref.schema.empty_table().select(columns or ref.schema.names)
    return dt.to_pyarrow_table(columns=columns)
