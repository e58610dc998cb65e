"""Throughput and memory of the labelling stage of ``label-dataset`` (issue 5), in one process.

For one SAM (tiny-sam with the zoo's agent for ``--task``, saliency by default, or vit_b and a
saliency agent with random weights: cost does not depend on weights), on the same generated images
of that task, in this order:

1. encoder only: the same Ray Data actor pool, batches and threads as the pipeline, but each actor
   only reads, decodes and encodes (``EncodeOnly``); the ceiling a SAM labeller could reach;
2. the pipeline: ``run_labelling`` (Ray Data actor pool: decode, encode, T = 15 prompting steps,
   confidence, RLE, routed Delta commits) with 1 and then 2 actors on a local 2-CPU Ray cluster.
   Steady-state images/s is counted between the first and the last committed batch (actor start-up
   and model loading excluded); end-to-end includes them. Peak RSS of each actor process is polled
   every 0.1 s;
3. ``SamAutomaticMaskGenerator`` (segment-anything's own, default 32x32 point grid) on the same SAM,
   on the first ``--amg-images`` images.

    python benchmarks/label_throughput.py --model tiny-sam --images 64 --batch-size 8
    python benchmarks/label_throughput.py --model vit_b --images 4 --batch-size 2 --actors 1 --amg-images 1
    python benchmarks/label_throughput.py --task shadow --actors 1   # an explicit-branch agent (+ tiny-clip)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import numpy as np
import psutil
import torch

from maskfactory.infra import tables
from maskfactory.infra.images import read_image
from maskfactory.infra.ray_runtime import ensure_ray
from maskfactory.infra.settings import Settings
from maskfactory.models.alignsam.agent import AlignSam, AlignSamConfig, save_agent
from maskfactory.models.confidence import ConfidenceModel
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import get_spec, load_sam_model
from maskfactory.models.sam import build_sam
from maskfactory.simulators import datasets
from maskfactory.simulators.world import TASKS
from maskfactory.tasks import discover, labelling
from maskfactory.tasks.policy import zoo_policy_path

CLUSTER_CPUS = 2


def random_vit_b(folder: str) -> tuple[Settings, str]:
    """vit_b with random weights as an official-style checkpoint, and a random agent for it."""
    torch.manual_seed(0)
    sam = build_sam(get_spec("vit_b").config)
    sam_path = os.path.join(folder, "vit_b-random.pth")
    torch.save(sam.state_dict(), sam_path)
    agent = AlignSam(sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size[0],
                     AlignSamConfig(task="saliency", sam_model="vit_b"))  # fmt: skip
    # The labeller needs a confidence model; this one is fitted on noise. Timing only.
    rng = np.random.default_rng(0)
    confidence = ConfidenceModel.fit(rng.uniform(size=(32, 4)), rng.uniform(size=32)).to_dict()
    policy = os.path.join(folder, "alignsam-vit_b-random.pt")
    save_agent(agent, policy, extra={"confidence": confidence})
    return Settings(sam_model="vit_b", sam_checkpoint=sam_path), policy


class PeakRss:
    """Polls the resident memory of every AutoLabeler actor process; keeps each one's peak."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                if "AutoLabeler" in " ".join(p.info["cmdline"] or []) and p.info["memory_info"]:
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.info["memory_info"].rss)
            time.sleep(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class EncodeOnly:
    """A Ray Data worker that does only what the labeller must do anyway: read, decode, encode."""

    def __init__(self, settings: dict, threads: int) -> None:
        torch.set_num_threads(threads)
        self.settings = Settings(**settings)
        self.predictor = BatchedSamPredictor(load_sam_model(None, None, self.settings)[0])

    def __call__(self, batch: dict) -> dict:
        self.predictor.encode([read_image(u, settings=self.settings) for u in batch["uri"]])
        return {"uri": batch["uri"]}


def rates(marks: list[tuple[float, int]], start: float, total: int) -> dict[str, float]:
    """Steady-state images/s between the first and last finished batch, and end-to-end images/s."""
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return {
        "steady_images_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan"),
        "end_to_end_images_per_s": total / (time.perf_counter() - start),
    }


def encoder_only(settings: Settings, source: str, actors: int, batch_size: int) -> dict[str, float]:
    """The same Ray Data actor pool and batches as the pipeline, doing decode + encode only."""
    import ray

    uris = [u for u, _ in discover.list_source(source)]
    data = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=-(-len(uris) // batch_size))
    stream = data.map_batches(
        EncodeOnly,
        fn_constructor_kwargs={"settings": settings.model_dump(), "threads": max(1, CLUSTER_CPUS // actors)},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=min(1.0, 0.9 * CLUSTER_CPUS / actors),
    )
    marks, done, start = [], 0, time.perf_counter()
    for batch in stream.iter_batches(batch_size=None):
        done += len(batch["uri"])
        marks.append((time.perf_counter(), done))
    return rates(marks, start, len(uris))


def pipeline(
    settings: Settings, task: str, policy: str, source: str, out: str, actors: int, batch_size: int
) -> dict[str, float]:
    items = discover.discover(source, task, tables.TableRef(out, "labels", settings), "-", "-").todo
    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    with PeakRss() as rss:
        job = labelling.LabelJob(task, policy, out, f"bench-{actors}", 0.5, batch_size, actors)
        labelling.run_labelling(
            items, set(), job, settings, lambda done, _: marks.append((time.perf_counter(), done))
        )
    return {
        "actors": actors,
        "images": len(items),
        **rates(marks, start, len(items)),
        "peak_rss_mib_per_actor": sorted(round(v / 2**20) for v in rss.peaks.values()),
    }


def automatic_mask_generator(settings: Settings, images: list[np.ndarray]) -> float:
    from segment_anything import SamAutomaticMaskGenerator

    torch.set_num_threads(CLUSTER_CPUS)
    sam, _ = load_sam_model(None, None, settings)
    generator = SamAutomaticMaskGenerator(sam)
    start = time.perf_counter()
    for image in images:
        generator.generate(image)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-sam", choices=["tiny-sam", "vit_b"])
    parser.add_argument("--task", default="saliency", choices=TASKS, help="tiny-sam only.")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--amg-images", type=int, default=4)
    parser.add_argument("--log", default=None, help="Append the result as one JSON line to this file.")
    args = parser.parse_args()
    if args.model == "vit_b" and args.task != "saliency":
        parser.error("vit_b runs a random saliency agent; --task is for tiny-sam")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny-sam":
            settings, policy = Settings(sam_model="tiny-sam"), zoo_policy_path(args.task)
        else:
            settings, policy = random_vit_b(tmp)
        data = os.path.join(tmp, "data")
        datasets.write_dataset(data, args.task, n=args.images, seed=7)
        images = [it.image for it in datasets.iter_items(data)]
        result: dict[str, object] = {
            "model": args.model,
            "task": args.task,
            "images": args.images,
            "batch_size": args.batch_size,
            "cluster_cpus": CLUSTER_CPUS,
            "date": time.strftime("%Y-%m-%d"),
        }
        ensure_ray(num_cpus=CLUSTER_CPUS)
        source = os.path.join(data, "images")
        runs = []
        for a in args.actors:
            encoder = encoder_only(settings, source, a, args.batch_size)
            out = os.path.join(tmp, f"out-{a}")
            run = pipeline(settings, args.task, policy, source, out, a, args.batch_size)
            run["encoder_only"] = encoder
            run["steady_over_encoder"] = run["steady_images_per_s"] / encoder["steady_images_per_s"]
            runs.append(run)
        result["pipeline"] = runs
        amg = automatic_mask_generator(settings, images[: args.amg_images])
        result["automatic_mask_generator_images_per_s"] = amg
        result["pipeline_over_amg"] = [r["steady_images_per_s"] / amg for r in runs]
    line = json.dumps(result)
    print(json.dumps(result, indent=2))
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
