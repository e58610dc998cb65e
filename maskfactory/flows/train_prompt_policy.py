"""Flow ``train-prompt-policy``: train one task's AlignSAM agent on a few-shot set and save it.

Reads like the process: pick the few-shot split, train policy and SRM with progress shown in Prefect,
score the held-back validation items, save a versioned checkpoint that carries its config and
validation figures, and publish those figures as a table artifact. Training runs in the flow's own
process: one agent trains on one CPU or GPU, so there is nothing for a Ray cluster to spread.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from maskfactory.tasks import policy


@task(name="train-agent")
def train_agent(
    task_name: str, data: str, out: str, shots: int, seed: int, branch: str | None, episodes: int
) -> dict[str, Any]:
    progress = create_progress_artifact(0.0, description=f"AlignSAM {task_name}: training episodes")

    def log(row: dict[str, float]) -> None:
        update_progress_artifact(progress, 100.0 * row["episode"] / episodes)

    uri, version, summary = policy.train_policy(
        task_name, data, out, shots=shots, seed=seed, branch=branch, log=log, episodes=episodes
    )
    return {"uri": uri, "version": version, **summary}


@flow(name="train-prompt-policy", log_prints=True)
def train_prompt_policy(
    task: str,
    data: str,
    out: str,
    shots: int = 50,
    seed: int = 0,
    branch: str | None = None,
    episodes: int = 50,
) -> dict[str, Any]:
    """Train AlignSAM for ``task`` on ``shots`` items of dataset ``data``; save the agent to ``out``.

    ``branch``: "implicit" or "explicit" SRM (default: the task's). ``episodes``: passes over the
    few-shot set (the paper's 50).
    """
    result = train_agent(task, data, out, shots, seed, branch, episodes)
    validation = result["validation"]
    create_table_artifact(
        [{"figure": k, "value": v} for k, v in validation.items()],
        key=f"alignsam-{task}-validation",
        description=f"AlignSAM {task} {result['version']}: validation figures ({shots} shots)",
    )
    print(f"AlignSAM {task} {result['version']}: {result['uri']}; validation mIoU {validation.get('mIoU')}")
    return result
