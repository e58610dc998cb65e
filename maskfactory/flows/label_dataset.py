"""Flow ``label-dataset``: auto-label a collection with SAM prompted by the task's AlignSAM agent.

It reads like DESIGN.md's data flow: discover the items (skipping those labelled by the same model
versions), label them on a Ray actor pool, route each by its calibrated confidence, commit the rows
batch by batch into the ``labels`` table, and record the run (a ``runs`` row and a summary artifact).
Rerunning it after a crash labels only what is missing.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from maskfactory.infra import tables
from maskfactory.infra.settings import get_settings
from maskfactory.tasks import discover, labelling
from maskfactory.tasks.policy import zoo_policy_path


@task(name="discover-items", cache_policy=NO_CACHE)
def discover_items(
    source: str, task_name: str, output: str, policy: str, limit: int | None
) -> tuple[discover.Discovered, str, str]:
    settings = get_settings()
    sam_version, policy_version = labelling.versions(policy, settings)
    labels = tables.TableRef(output, "labels", settings)
    found = discover.discover(source, task_name, labels, sam_version, policy_version, limit, settings)
    print(f"{len(found.todo)} items to label ({len(found.relabel)} relabels), {found.skipped} already done")
    return found, sam_version, policy_version


@flow(name="label-dataset", log_prints=True)
def label_dataset(
    source: str,
    task: str,
    output: str | None = None,
    policy: str | None = None,
    review_threshold: float = 0.5,
    batch_size: int = 16,
    num_actors: int = 1,
    gpus_per_actor: float = 0.0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Label every image of ``source`` (folder, prefix or manifest URI) for ``task``.

    ``output``: table root (default: settings' storage root). ``policy``: agent checkpoint URI
    (default: the zoo's for the task). Items whose confidence is below ``review_threshold`` get
    ``status=needs_review``.
    """
    started, clock = datetime.now(UTC), time.perf_counter()
    run_id = str(flow_run.id or uuid.uuid4())
    output = output or get_settings().storage_root
    policy = policy or zoo_policy_path(task)
    job = labelling.LabelJob(
        task, policy, output, run_id, review_threshold, batch_size, num_actors, gpus_per_actor
    )  # checks the parameters before any work
    found, sam_version, policy_version = discover_items(source, task, output, policy, limit)
    counts = labelling.label_items(found.todo, found.relabel, job)
    parameters = {
        "source": source,
        "output": output,
        "policy": policy,
        "review_threshold": review_threshold,
        "batch_size": batch_size,
        "num_actors": num_actors,
        "gpus_per_actor": gpus_per_actor,
        "limit": limit,
    }
    row = labelling.run_row(
        "label-dataset", job, counts, found.skipped, started, time.perf_counter() - clock,
        (sam_version, policy_version), parameters,
    )  # fmt: skip
    labelling.record_run(output, get_settings(), row)
    summary = {k: v for k, v in row.items() if k not in ("parameters", "started_at", "finished_at")}
    create_table_artifact(
        [{"figure": k, "value": v} for k, v in summary.items()],
        key=f"label-dataset-{task}",
        description=f"label-dataset {task}: {row['items']} items from {source} into {output}",
    )
    print(f"labelled {row['items']} items: {counts}; skipped {found.skipped}; tables at {output}")
    return {**summary, "output": output, "source": source}
