"""The checkpoints shipped in maskfactory/models/zoo/: present, small, loadable, and actually trained
(tiny-sam, tiny-clip and the five AlignSAM agents)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from maskfactory.infra.checkpoints import read_header
from maskfactory.models.interactive import SamClickSegmenter
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import load_sam_model
from maskfactory.models.zoo import ZOO_DIR, zoo_path
from maskfactory.simulators.clicker import Click
from maskfactory.simulators.datasets import write_dataset
from maskfactory.simulators.world import BRANCH, TASKS, make_sample


def test_the_zoo_fits_its_size_budget() -> None:
    files = list(ZOO_DIR.glob("*.pt"))
    assert {"tiny-sam.pt", "tiny-clip.pt"} <= {f.name for f in files}
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20


def test_shipped_tiny_sam_says_how_it_was_trained() -> None:
    header = read_header(str(zoo_path("tiny-sam.pt")))
    assert header is not None and len(header["version"]) == 12
    training = header["extra"]["training"]
    # Training seed 2: of the two fresh runs of the recipe measured, the one that meets NoC@85 <= 4 on
    # every task (benchmarks/RESULTS.md, "Tiny-sam run 9"); README gives the command with --seed 2.
    assert training["seed"] == 2 and training["domain"] == "natural" and training["steps_run"] > 0


def test_shipped_tiny_sam_is_what_the_recipe_trains() -> None:
    """`zoo train tiny-sam` replays the shipped run's settings (the recipe, then the zoom leg) only if the
    recipe's and the leg's defaults are the ones it ran with. The leg's time limit is what the first
    schedule left of the command's, so it is not a default; `stop_after` is the replay's own switch.
    Settings, not bits: training the shipped run again takes 28 minutes (`zoo train tiny-sam --seed 2
    --stop-after 2600` gave its weights bit for bit on 2026-12-06; benchmarks/RESULTS.md, "Tiny-sam
    run 9")."""
    from maskfactory.models.zoo.train_sam import ZOOM_LEG, TinySamTraining

    ran = read_header(str(zoo_path("tiny-sam.pt")))["extra"]["training"]
    recipe, leg = asdict(TinySamTraining()), asdict(ZOOM_LEG)
    del recipe["stop_after"], leg["stop_after"], leg["time_limit_s"]
    del recipe["seed"], leg["seed"]  # the command's --seed, not a setting (checked in the test above)
    for defaults, run in ((recipe, ran), (leg, ran["zoom_leg"])):
        # Options added after the shipped run are not in its header; they must be off by default
        # (None), so that the recipe still runs as it did.
        later = {k: defaults.pop(k) for k in list(defaults) if k not in run}
        assert all(v is None for v in later.values()), later
        assert {k: run[k] for k in defaults} == json.loads(json.dumps(defaults))  # tuples come back as lists
        assert run["steps_run"] == run["steps"]  # the whole schedule ran


def test_shipped_tiny_clip_names_held_out_shapes_zero_shot() -> None:
    """Chance is 1/6 and an untrained model scores about that. The shipped one scores 56 of these 60
    (0.96 and 0.97 on the two held-out sets of benchmarks/RESULTS.md); the model it replaced scored
    53 of 60 and 0.87 held-out, under the issue's bar of 0.9."""
    from maskfactory.models.clip import normalize_images, square_resize
    from maskfactory.models.registry import load_clip_model
    from maskfactory.models.zoo.train_clip import zero_shot_accuracy
    from maskfactory.simulators.world import CLASSES

    loaded = load_clip_model("tiny-clip")
    header = read_header(str(zoo_path("tiny-clip.pt")))
    assert header is not None and header["extra"]["training"]["steps_run"] > 0
    samples = [make_sample("semantic", "natural", seed=7_000_000 + i, n_objects=1) for i in range(60)]
    x = normalize_images(
        np.stack([square_resize(s.image, loaded.image_size) for s in samples]), loaded.mean, loaded.std
    )
    labels = [CLASSES.index(s.object_kinds[0]) for s in samples]
    accuracy = zero_shot_accuracy(loaded.model, loaded.tokenizer, x, labels, CLASSES)
    assert accuracy >= 0.85, accuracy


def test_shipped_tiny_clip_is_what_the_recipe_trains() -> None:
    """`zoo train tiny-clip --stop-after 2400` replays the shipped run only if the recipe's defaults
    are the ones it ran with (`stop_after` aside: that is the replay's own switch)."""
    from maskfactory.models.zoo.train_clip import TinyClipTraining

    ran = read_header(str(zoo_path("tiny-clip.pt")))["extra"]["training"]
    recipe = asdict(TinyClipTraining())
    del recipe["stop_after"]
    assert {k: ran[k] for k in recipe} == recipe
    assert ran["steps_run"] == ran["steps"]  # the whole schedule ran


def test_shipped_tiny_clip_text_maps_find_shadows_and_classes() -> None:
    """CLIP Surgery's map for the task prompt is higher on the target than off it."""
    from maskfactory.models.clip_surgery import ClipSurgery
    from maskfactory.models.registry import load_clip_model

    surgery = ClipSurgery(load_clip_model("tiny-clip"))
    for task in ("semantic", "shadow"):
        gaps = []
        for i in range(6):
            sample = make_sample(task, "natural", seed=7_100_000 + i)
            maps = surgery.sam_frame_maps([sample.image], [sample.prompt], [(256, 256)], 256, 16)[0]
            cover = torch.nn.functional.adaptive_avg_pool2d(
                torch.from_numpy(sample.target).float()[None], 16
            )[0]
            gaps.append(float(maps[cover >= 0.5].mean() - maps[cover == 0].mean()))
        assert np.mean(gaps) > 0.3, (task, gaps)  # a random-weight CLIP: about 0.05


def test_tiny_sam_segments_held_out_objects_from_one_click() -> None:
    """An untrained model scores about 0.05 here; the shipped one is far above (quality figures, and
    the targets it misses, are in benchmarks/RESULTS.md)."""
    sam, _ = load_sam_model("tiny-sam")  # no checkpoint argument: the registry's zoo default
    segmenter = SamClickSegmenter(BatchedSamPredictor(sam))
    ious = []
    for i, task in enumerate(TASKS):
        sample = make_sample(task, "natural", seed=7_000_000 + i)  # far from the training seeds
        for mask in sample.objects:
            segmenter.start(sample.image)
            depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            y, x = np.unravel_index(depth.argmax(), mask.shape)
            pred = segmenter.predict([Click(float(x), float(y), True)])
            ious.append((pred & mask).sum() / (pred | mask).sum())
    assert np.mean(ious) > 0.45, np.mean(ious)


def test_zoo_eval_cli_prints_json(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), "saliency", n=2, seed=7)
    maskfactory = str(Path(sys.executable).with_name("maskfactory"))
    out = subprocess.run(
        [
            maskfactory,
            "zoo",
            "eval",
            "tiny-sam",
            "--data",
            str(tmp_path),
            "--json",
            "--max-clicks",
            "5",
            "--zoom-in",
            "--refine",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"mIoU@1", "NoC@85", "NoC@90", "per_task"} <= set(result) and result["max_clicks"] == 5
    assert set(result["per_task"]) == {"saliency"}
    assert result["zoom_in"] == {"skip_clicks": 0, "expansion": 1.4, "min_crop": 128, "keep_iou": 0.5}
    assert result["refine"] == {"radius": 16.0, "eps": 1e-5, "guide_sigma": 0.7}


def test_shipped_alignsam_agents_say_what_they_are() -> None:
    from maskfactory.models.alignsam.agent import load_agent
    from maskfactory.tasks.policy import zoo_policy_path

    # An agent reads its SAM's embeddings (and an explicit one its CLIP's maps), so a retrained
    # tiny-sam or tiny-clip must ship with retrained agents.
    sam_version = read_header(str(zoo_path("tiny-sam.pt")))["version"]
    clip_version = read_header(str(zoo_path("tiny-clip.pt")))["version"]
    for task in TASKS:
        agent, version, extra = load_agent(zoo_policy_path(task))
        assert agent.config.task == task and agent.config.sam_model == "tiny-sam" and len(version) == 12
        assert extra["sam_version"] == sam_version, task
        assert extra["clip_version"] == (clip_version if agent.config.explicit else None), task
        assert extra["shots"] == 50 and extra["validation"]["images"] == 20
        # The semantic switch as chosen in world.BRANCH; explicit agents read tiny-clip's text maps.
        assert agent.config.explicit == (BRANCH[task] == "explicit")
        assert agent.config.clip_model == ("tiny-clip" if agent.config.explicit else None)
        # The routing confidence, refitted on 100 items of world seed 5 (`policy calibrate`), which no
        # zoo model trained on (tiny-sam: seed 2, tiny-clip and the agents: seed 0).
        assert extra["confidence"]["fitted_on"] == 100 and "--seed 5" in extra["confidence_data"]


def test_the_shipped_saliency_agent_prompts_the_target_more_than_random_actions(tmp_path: Path) -> None:
    """On 8 held-out saliency images (dataset seed 7) the greedy agent's 15 points land on the
    salient object far more often than random ones, and its masks are better."""
    from maskfactory.tasks.policy import evaluate_policy

    write_dataset(str(tmp_path), "saliency", n=8, seed=7)
    full = evaluate_policy("saliency", str(tmp_path))
    random = evaluate_policy("saliency", str(tmp_path), ablation="no-rl")
    assert full["foreground_rate"] > random["foreground_rate"] + 0.3, (full, random)
    assert full["mIoU"] > random["mIoU"], (full, random)


def test_the_shipped_shadow_agent_labels_its_points_from_the_text_map(tmp_path: Path) -> None:
    """The explicit-branch shadow agent (tiny-clip's map of "shadow") labels its points far better
    than calling them all positive would, which would be right only on the share that hit a shadow."""
    from maskfactory.tasks.policy import evaluate_policy

    write_dataset(str(tmp_path), "shadow", n=8, seed=7)
    full = evaluate_policy("shadow", str(tmp_path))
    assert full["label_accuracy"] > full["foreground_rate"] + 0.3, full
