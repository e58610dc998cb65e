"""The deployments in ``prefect.yaml``, built as Prefect runner deployments that one process serves.

``prefect.yaml`` stays the one place that says which deployments exist, their schedules and default
parameters; ``maskfactory serve`` turns each entry into ``flow.to_deployment(...)`` and serves them all.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

# The repository's prefect.yaml, next to the package.
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "prefect.yaml"


def _import_flow(entrypoint: str) -> Any:
    """``maskfactory/flows/label_dataset.py:label_dataset`` -> the flow object, imported as a module."""
    path, _, name = entrypoint.partition(":")
    if not name or not path.endswith(".py"):
        raise ValueError(f"entrypoint must look like path/to/module.py:flow_name, got {entrypoint!r}")
    module = importlib.import_module(path[: -len(".py")].replace("/", "."))
    return getattr(module, name)


def load_deployments(file: str | Path = DEFAULT_FILE) -> list[RunnerDeployment]:
    """Every deployment of a ``prefect.yaml`` as a runner deployment (schedules and parameters kept)."""
    spec = yaml.safe_load(Path(file).read_text())
    out = []
    for entry in spec.get("deployments") or []:
        flow = _import_flow(entry["entrypoint"])
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone")) for s in entry.get("schedules") or [] if "cron" in s
        ]
        out.append(
            flow.to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                tags=entry.get("tags"),
                parameters=entry.get("parameters"),
                schedules=schedules or None,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out
