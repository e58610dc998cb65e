"""World datasets on disk: what `maskfactory world make` writes is what the generators made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from maskfactory.simulators import datasets
from maskfactory.simulators.video import make_video
from maskfactory.simulators.world import make_sample
from maskfactory.tasks.zoo import clip_captions


def test_images_round_trip_through_storage(storage_root: str) -> None:
    out = f"{storage_root}/shadow"
    manifest = datasets.write_dataset(out, "shadow", "natural", n=3, seed=2, size=(96, 128))
    table = datasets.read_manifest(out)
    assert table.schema == datasets.MANIFEST and table.num_rows == 3
    assert manifest.endswith("manifest.parquet")
    for i, item in enumerate(datasets.iter_items(out)):
        want = make_sample("shadow", "natural", seed=2 * datasets.SEED_STRIDE + i, size=(96, 128))
        assert np.array_equal(item.image, want.image)  # PNG is lossless
        assert np.array_equal(item.target, want.target)
        assert np.array_equal(item.instances, want.objects)
        assert item.row["prompt"] == want.prompt and item.row["object_kinds"] == want.object_kinds
        assert (item.row["width"], item.row["height"]) == (128, 96)
    # The manifest says how the dataset was made; one written without that says nothing.
    assert datasets.read_made_by(out) == (
        "write_dataset(task='shadow', domain='natural', n=3, seed=2, size=(96, 128), n_objects=None)"
    )
    datasets.write_dataset(out, "shadow", n=1, made_by="a user's own labelling")
    assert datasets.read_made_by(out) == "a user's own labelling"


def test_different_seeds_never_share_items(tmp_path: Path) -> None:
    a = datasets.read_manifest(datasets.write_dataset(str(tmp_path / "a"), "blur", n=4, seed=0)).column(
        "seed"
    )
    b = datasets.read_manifest(datasets.write_dataset(str(tmp_path / "b"), "blur", n=4, seed=1)).column(
        "seed"
    )
    assert not set(a.to_pylist()) & set(b.to_pylist())


def test_a_manifest_that_does_not_say_how_it_was_made_reads_as_none(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image_uri": ["a.png"]}), tmp_path / "manifest.parquet")
    assert datasets.read_made_by(str(tmp_path)) is None


def test_videos_round_trip(tmp_path: Path) -> None:
    datasets.write_videos(str(tmp_path), "natural", n=1, seed=5)
    assert datasets.read_made_by(str(tmp_path)) == "write_videos(domain='natural', n=1, seed=5)"
    row = datasets.read_manifest(str(tmp_path)).to_pylist()[0]
    video = make_video(5 * datasets.SEED_STRIDE, "natural")
    assert row["video_id"] == video.video_id and row["n_frames"] == video.frames.shape[0]
    frames = sorted(Path(row["frames_uri"]).iterdir())
    assert len(frames) == video.frames.shape[0]
    from PIL import Image

    last = np.asarray(Image.open(frames[-1]))
    labels = np.asarray(Image.open(Path(row["masks_uri"]) / frames[-1].name))
    assert np.array_equal(last, video.frames[-1])
    assert np.array_equal(datasets.instances_from_labels(labels, len(row["object_kinds"])), video.masks[-1])


def test_world_make_cli(tmp_path: Path) -> None:
    maskfactory = str(Path(sys.executable).with_name("maskfactory"))
    args = ["world", "make", "--task", "semantic", "--domain", "medical", "--n", "3", "--seed", "4"]
    out = subprocess.run(
        [maskfactory, *args, "--objects", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    table = pq.read_table(tmp_path / "manifest.parquet")
    assert table.num_rows == 3 and set(table.column("domain").to_pylist()) == {"medical"}
    assert all(len(k) == 1 for k in table.column("object_kinds").to_pylist())
    assert len(list((tmp_path / "images").iterdir())) == 3
    assert datasets.read_made_by(str(tmp_path)) == " ".join(
        ["maskfactory", *args, "--objects", "1", "--out", str(tmp_path)]
    )


def test_captions_name_what_is_in_the_image() -> None:
    single = make_sample("semantic", seed=11, n_objects=1)
    kind, color = single.object_kinds[0], single.object_colors[0]
    assert clip_captions(single) == [
        kind,  # the bare class name: the semantic task's prompt, which CLIP Surgery maps
        f"a photo of a {kind}",
        f"a photo of a {color} {kind}",
        f"a {color} {kind}",
    ]
    shadow = make_sample("shadow", seed=3)
    captions = clip_captions(shadow)
    assert "a photo with shadows" in captions and "shadow" in captions  # the bare prompt AlignSAM uses
    assert all(k in " ".join(captions) for k in {k for k in shadow.object_kinds if k != "shadow"})


def test_zoo_training_seed_s_uses_exactly_dataset_seed_s(tmp_path: Path) -> None:
    """A zoo model trained with seed S has seen dataset seed S's items and no other seed's."""
    from maskfactory.tasks.zoo import training_samples

    datasets.write_dataset(str(tmp_path), "semantic", n=1, seed=3)
    item = next(datasets.iter_items(str(tmp_path)))
    trained_on = next(training_samples(1, 3))  # item 0 cycles to the first task, semantic
    assert np.array_equal(trained_on.image, item.image)
    assert not np.array_equal(next(training_samples(1, 4)).image, item.image)


def test_clip_pool_holds_the_scenes_then_the_single_object_samples_of_its_seed() -> None:
    """The pool is built one sample at a time (to keep its peak memory down), in a fixed order."""
    from maskfactory.tasks.zoo import captioned_image, clip_pool, training_samples

    pool = clip_pool(4, seed=2, size=128)
    scenes = list(training_samples(2, 2))
    singles = list(training_samples(2, 2, tasks=("semantic",), n_objects=1))
    for got, sample in zip(pool, scenes + singles, strict=True):
        want = captioned_image(sample, 128)
        assert np.array_equal(got.image, want.image) and got.captions == want.captions
        assert np.array_equal(got.regions, want.regions)
    assert len(pool[2].regions) == 1 and len(pool[0].regions) > 1
