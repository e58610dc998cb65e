"""Flow ``nightly-relabel`` (cron 02:00 UTC): relabel what is stale in the ``labels`` table.

Per task in the table: the items still waiting for review, and the items labelled by other model
versions than the task's current agent, are labelled again and merged into ``labels`` (one row per
item and task). Human decisions (``source`` other than ``auto``) are never touched.

For now the agents are fixed, so relabelling a ``needs_review`` item with the same versions gives the
same mask; once the RAIS adapter learns from accepted reviews (a later issue), it will not.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from maskfactory.infra import tables
from maskfactory.infra.settings import get_settings
from maskfactory.tasks import labelling
from maskfactory.tasks.discover import Item
from maskfactory.tasks.policy import zoo_policy_path


@task(name="find-stale", cache_policy=NO_CACHE)
def find_stale(output: str, task_name: str, policy: str) -> tuple[list[Item], str, str]:
    """Auto-labelled items of ``task_name`` that wait for review or carry other model versions."""
    settings = get_settings()
    sam_version, policy_version = labelling.versions(policy, settings)
    rows = tables.read_table(tables.TableRef(output, "labels", settings))
    rows = rows.filter(pc.and_(pc.equal(rows["task"], task_name), pc.equal(rows["source"], "auto")))
    stale = [
        Item(r["item_id"], r["uri"])
        for r in rows.to_pylist()
        if r["status"] == "needs_review"
        or (r["sam_version"], r["policy_version"]) != (sam_version, policy_version)
    ]
    print(f"{task_name}: {len(stale)} of {rows.num_rows} auto-labelled items to relabel")
    return stale, sam_version, policy_version


@flow(name="nightly-relabel", log_prints=True)
def nightly_relabel(
    output: str | None = None,
    policies: dict[str, str] | None = None,
    review_threshold: float = 0.5,
    batch_size: int = 16,
    num_actors: int = 1,
    gpus_per_actor: float = 0.0,
) -> dict[str, Any]:
    """Relabel stale items of every task in ``output``'s labels table (``policies``: task -> agent
    URI; default: the zoo's)."""
    settings = get_settings()
    output = output or settings.storage_root
    run_id = str(flow_run.id or uuid.uuid4())
    started, clock = datetime.now(UTC), time.perf_counter()
    task_column = tables.read_table(tables.TableRef(output, "labels", settings), ["task"])["task"]
    results = {}
    for task_name in sorted(set(task_column.to_pylist())):
        policy = (policies or {}).get(task_name) or zoo_policy_path(task_name)
        stale, sam_version, policy_version = find_stale(output, task_name, policy)
        job = labelling.LabelJob(
            task_name, policy, output, run_id, review_threshold, batch_size, num_actors, gpus_per_actor
        )
        counts = labelling.label_items(stale, {it.item_id for it in stale}, job)
        results[task_name] = counts
        parameters = {"output": output, "policy": policy, "review_threshold": review_threshold}
        row = labelling.run_row(
            "nightly-relabel", job, counts, 0, started, time.perf_counter() - clock,
            (sam_version, policy_version), parameters,
        )  # fmt: skip
        labelling.record_run(output, settings, row)
    print(f"relabelled: {results}")
    return {"run_id": run_id, "output": output, "tasks": results}
