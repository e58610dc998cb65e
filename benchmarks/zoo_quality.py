"""Quality of the shipped tiny zoo on held-out world data, as a Markdown table (and JSON).

    .venv/bin/python benchmarks/zoo_quality.py [--n 40] [--seed 1] [--out /tmp/zoo-eval]

For every task in every domain it writes a held-out dataset (dataset seed 1 by default; the shipped
tiny-sam trained on seed-2 samples, tiny-clip on seed 0, see maskfactory/tasks/zoo.py) and measures
tiny-sam's mIoU after one click, NoC@85 and NoC@90 over all instance masks (RITM clicker, at most 20
clicks). tiny-clip's zero-shot top-1 is measured on single-object semantic images. The domain gap is
each domain's NoC@85 relative to natural.
``--zoom-in`` answers the clicks in a crop around the object (Zoom-In, ``models/interactive.py``);
``--refine`` refines every answer along the image's edges (the guided filter, ``models/refine.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from maskfactory.models.interactive import ZoomIn
from maskfactory.models.refine import GuidedRefinement
from maskfactory.simulators.datasets import write_dataset
from maskfactory.simulators.world import DOMAINS, TASKS
from maskfactory.tasks.zoo import evaluate_tiny_clip, evaluate_tiny_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40, help="images per task and domain")
    parser.add_argument(
        "--seed", type=int, default=1, help="dataset seed (not 2 or 0: the zoo trained on those)"
    )
    parser.add_argument("--out", default="/tmp/zoo-eval", help="where the held-out datasets go")
    parser.add_argument("--sam", default=None, help="tiny-sam checkpoint (default: the shipped one)")
    parser.add_argument("--clip", default=None, help="tiny-clip checkpoint (default: the shipped one)")
    parser.add_argument(
        "--zoom-in",
        action="store_true",
        help="tiny-sam's clicks answered in a crop around the object (Zoom-In)",
    )
    parser.add_argument(
        "--refine", action="store_true", help="tiny-sam's answers refined by the guided filter"
    )
    parser.add_argument("--skip-clip", action="store_true", help="measure tiny-sam only")
    parser.add_argument("--skip-sam", action="store_true", help="measure tiny-clip only")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    args = parser.parse_args()
    domains = [] if args.skip_sam else args.domains

    results: dict[str, dict] = {}
    for domain in domains:
        for task in TASKS:
            data = Path(args.out) / f"{domain}-{task}"
            if not (data / "manifest.parquet").exists():
                write_dataset(str(data), task, domain, n=args.n, seed=args.seed)
            start = time.perf_counter()
            r = evaluate_tiny_sam(
                str(data),
                args.sam,
                zoom_in=ZoomIn() if args.zoom_in else None,
                refine=GuidedRefinement() if args.refine else None,
            )
            r["seconds"] = time.perf_counter() - start
            results[f"{domain}/{task}"] = r
            print(
                f"{domain:8s} {task:9s} n={r['n']:4d} mIoU@1={r['mIoU@1']:.3f} NoC@85={r['NoC@85']:.2f} "
                f"NoC@90={r['NoC@90']:.2f} ({r['seconds']:.0f} s)",
                flush=True,
            )
    clip = None
    if not args.skip_clip:
        clip_data = Path(args.out) / "clip-single"
        if not (clip_data / "manifest.parquet").exists():
            write_dataset(str(clip_data), "semantic", "natural", n=10 * args.n, seed=args.seed, n_objects=1)
        clip = evaluate_tiny_clip(str(clip_data), args.clip)

    if results:
        print("\n| domain | task | instances | mIoU@1 | NoC@85 | NoC@90 | failures@85 |")
        print("|---|---|---|---|---|---|---|")
        for key, r in results.items():
            domain, task = key.split("/")
            print(
                f"| {domain} | {task} | {r['n']} | {r['mIoU@1']:.3f} | {r['NoC@85']:.2f} "
                f"| {r['NoC@90']:.2f} | {r['failures@85']} |"
            )
    if "natural" in domains:
        print("\n| domain | mean NoC@85 over tasks | vs natural |")
        print("|---|---|---|")
        mean = {d: sum(results[f"{d}/{t}"]["NoC@85"] for t in TASKS) / len(TASKS) for d in domains}
        for d in domains:
            print(f"| {d} | {mean[d]:.2f} | {100 * (mean[d] / mean['natural'] - 1):+.0f}% |")
    if clip:
        print(f"\ntiny-clip zero-shot top-1 on {clip['images']} single-object images: {clip['top1']:.3f}")
    Path(args.out, "results.json").write_text(json.dumps({"tiny-sam": results, "tiny-clip": clip}, indent=2))


if __name__ == "__main__":
    main()
