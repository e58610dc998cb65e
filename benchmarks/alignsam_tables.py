"""AlignSAM's Table 2 / Table 5 / few-shot figures on the five synthetic tasks (issue 4).

For every task, training seed and shot count: train an agent on a world dataset (seed 0 items), then
score it on held-out items (a dataset made with seed 1) with the full agent and the three ablations
(50 shots only), and over T = 1, 5, 10, 15, 20 (50 shots only). One JSON line per figure goes to
``--out``, so an interrupted run keeps what it measured; ``--report`` turns the lines into tables.

    python benchmarks/alignsam_tables.py --root /tmp/alignsam --out benchmarks/logs/alignsam-tables.jsonl
    python benchmarks/alignsam_tables.py --report benchmarks/logs/alignsam-tables-stem-{a,b,c,d}.jsonl

``--ship`` copies the seed-0, 50-shot agents into the zoo (maskfactory/models/zoo/alignsam-TASK.pt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from maskfactory.models.alignsam.ppo import PPOConfig
from maskfactory.models.alignsam.prompter import ABLATIONS
from maskfactory.simulators import datasets
from maskfactory.simulators.world import BRANCH, TASKS
from maskfactory.tasks.policy import VALIDATION, evaluate_policy, train_policy, zoo_policy_path

STEPS = (1, 5, 10, 15, 20)
FIGURES = ("mIoU", "MAE", "BER", "F-beta", "E-measure", "foreground_rate")


def ensure_data(root: Path, task: str, shots: int, test_n: int) -> tuple[str, str]:
    train, test = root / f"train-{task}", root / f"test-{task}"
    if not (train / "manifest.parquet").exists():
        datasets.write_dataset(str(train), task, n=shots + VALIDATION, seed=0)
    if not (test / "manifest.parquet").exists():
        datasets.write_dataset(str(test), task, n=test_n, seed=1)
    return str(train), str(test)


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    data = {task: ensure_data(root, task, max(args.shots), args.test_n) for task in args.tasks}
    for seed in args.seeds:  # seed outermost: an interrupted run still covers every task
        for task in args.tasks:
            train, test = data[task]
            for shots in sorted(args.shots, reverse=True):
                masked = "-unmasked" if args.no_mask_chosen else ""
                branch = args.branch or BRANCH[task]
                policy = root / f"alignsam-{task}-{branch}-seed{seed}-{shots}shot{masked}.pt"
                started = time.monotonic()
                _, version, summary = train_policy(
                    task,
                    train,
                    str(policy),
                    shots=shots,
                    seed=seed,
                    branch=branch,
                    episodes=args.episodes,
                    ppo=PPOConfig(mask_chosen=not args.no_mask_chosen),
                )
                common = {
                    "task": task,
                    "seed": seed,
                    "shots": shots,
                    "version": version,
                    "mask_chosen": not args.no_mask_chosen,
                    "branch": branch,
                    "episodes": args.episodes,
                }
                emit(
                    {**common, "kind": "train", "seconds": time.monotonic() - started, **summary["training"]}
                )
                ablations = ABLATIONS if shots == max(args.shots) else ("full",)
                for ablation in ablations:
                    r = evaluate_policy(task, test, str(policy), ablation=ablation, seed=seed)
                    emit({**common, "kind": "eval", "ablation": ablation, "steps": r["steps"], **_figures(r)})
                if shots == max(args.shots):
                    for steps in args.steps:
                        r = evaluate_policy(task, test, str(policy), steps=steps)
                        emit({**common, "kind": "steps", "steps": steps, **_figures(r)})
                    if args.ship and seed == 0 and not args.no_mask_chosen:
                        shutil.copyfile(policy, zoo_policy_path(task))


def _figures(r: dict) -> dict:
    return {k: r[k] for k in (*FIGURES, "images")}


def report(paths: list[str]) -> None:
    every = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    # Rows written before the field existed name no count: they are all 12-episode rows (the two
    # 50-episode logs, alignsam-50-episodes.jsonl and the blur probe's rows, were tagged afterwards).
    episodes = {r.get("episodes", 12) for r in every}
    if len(episodes) > 1:
        raise SystemExit(f"rows of {sorted(episodes)} training episodes: report each set of files alone")
    full = [
        r for r in every if r["kind"] == "eval" and r["ablation"] == "full" and r.get("mask_chosen", True)
    ]
    switch = [r for r in full if r["shots"] == max(f["shots"] for f in full)]  # both branches
    every = [r for r in every if r["branch"] == BRANCH[r["task"]]]  # the tables: each task's own branch
    rows = [r for r in every if r.get("mask_chosen", True)]
    unmasked = [r for r in every if not r.get("mask_chosen", True)]
    evals = [r for r in rows if r["kind"] == "eval"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in evals)]
    top = max(r["shots"] for r in evals)

    def cell(values: list[float]) -> str:
        if not values or values[0] is None:
            return "-"
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" + (
            "" if len(values) == 3 else f" (n={len(values)})"
        )

    def pick(kind: str, **match: object) -> list[dict]:
        return [r for r in rows if r["kind"] == kind and all(r[k] == v for k, v in match.items())]

    print(f"### Ablations ({top} shots; mean ± std over training seeds)\n")
    print("| task | figure | " + " | ".join(ABLATIONS) + " |")
    print("|---|---|" + "---|" * len(ABLATIONS))
    for task in tasks:
        for figure in FIGURES:
            values = [
                cell([r[figure] for r in pick("eval", task=task, shots=top, ablation=a)]) for a in ABLATIONS
            ]
            print(f"| {task} | {figure} | " + " | ".join(values) + " |")
    print("\nFull against its best ablation (mean mIoU; seeds on which full beats all three):\n")
    for task in tasks:
        mean = {
            a: np.mean([r["mIoU"] for r in pick("eval", task=task, shots=top, ablation=a)]) for a in ABLATIONS
        }
        best = max(ABLATIONS[1:], key=mean.__getitem__)
        by_seed = defaultdict(dict)
        for r in pick("eval", task=task, shots=top):
            by_seed[r["seed"]][r["ablation"]] = r["mIoU"]
        wins = sum(all(s["full"] > s[a] for a in ABLATIONS[1:]) for s in by_seed.values())
        verdict = "beats all" if mean["full"] > mean[best] else "loses"
        print(
            f"- {task}: full {mean['full']:.3f}, best ablation {best} {mean[best]:.3f}: {verdict}; "
            f"{wins} of {len(by_seed)} seeds"
        )
    shots = sorted({r["shots"] for r in evals})
    print("\n### Shots (full agent, mIoU)\n")
    print("| task | " + " | ".join(f"{s} shots" for s in shots) + " |")
    print("|---|" + "---|" * len(shots))
    for task in tasks:
        values = [cell([r["mIoU"] for r in pick("eval", task=task, shots=s, ablation="full")]) for s in shots]
        print(f"| {task} | " + " | ".join(values) + " |")
    steps = sorted({r["steps"] for r in rows if r["kind"] == "steps"})
    print(f"\n### Prompting steps T at inference (full agent, {top} shots, mIoU)\n")
    print("| task | " + " | ".join(f"T={t}" for t in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for task in tasks:
        print(
            f"| {task} | "
            + " | ".join(cell([r["mIoU"] for r in pick("steps", task=task, steps=t)]) for t in steps)
            + " |"
        )
    if unmasked:
        print(f"\n### Masking chosen actions ({top} shots, mIoU and foreground rate of the full agent)\n")
        print("| task | masked mIoU | unmasked mIoU | masked FR | unmasked FR |")
        print("|---|---|---|---|---|")
        for task in tasks:
            seeds = {r["seed"] for r in unmasked if r["task"] == task and r["kind"] == "eval"}
            both = [
                [r for r in group if r["kind"] == "eval" and r["task"] == task and r["shots"] == top]
                for group in (rows, unmasked)
            ]
            masked, free = ([r for r in g if r["ablation"] == "full" and r["seed"] in seeds] for g in both)
            figures = [cell([r[f] for r in g]) for f in ("mIoU", "foreground_rate") for g in (masked, free)]
            print(f"| {task} | " + " | ".join(figures) + " |")
    branches = ("implicit", "explicit")
    print(f"\n### Semantic switch (Table 4: full agent, {top} shots, mIoU; * = the task's branch)\n")
    print("| task | " + " | ".join(branches) + " |")
    print("|---|---|---|")
    for task in tasks:
        values = [
            cell([r["mIoU"] for r in switch if r["task"] == task and r["branch"] == b])
            + ("*" if b == BRANCH[task] else "")
            for b in branches
        ]
        print(f"| {task} | " + " | ".join(values) + " |")
    seconds: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "train":
            seconds[(r["task"], r["shots"])].append(r["seconds"])
    print("\n### Training time (s per agent, mean over seeds)\n")
    print("| task | " + " | ".join(f"{s} shots" for s in shots) + " |")
    print("|---|" + "---|" * len(shots))
    for task in tasks:
        print(f"| {task} | " + " | ".join(f"{np.mean(seconds[(task, s)]):.0f}" for s in shots) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--report", nargs="+", help="Print tables from JSON-lines files (each task's branch) and exit."
    )
    parser.add_argument("--root", default="/tmp/alignsam-tables", help="Datasets and agents go here.")
    parser.add_argument("--out", default="benchmarks/logs/alignsam-tables.jsonl")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 20, 50])
    parser.add_argument(
        "--steps", nargs="*", type=int, default=list(STEPS), help="T values to sweep (none: skip)."
    )
    parser.add_argument(
        "--branch", choices=("implicit", "explicit"), help="SRM branch of every agent (default: the task's)."
    )
    parser.add_argument("--episodes", type=int, default=12, help="Passes over the few-shot set.")
    parser.add_argument("--test-n", type=int, default=50, help="Held-out images per task.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (run tasks in parallel).")
    parser.add_argument("--no-mask-chosen", action="store_true", help="Let the agent prompt a patch twice.")
    parser.add_argument(
        "--ship", action="store_true", help="Copy seed-0 agents of the top shot count to the zoo."
    )
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
