"""Small pieces the zoo's training recipes share."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean of a list of log rows (all rows have the same keys)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def half_precision(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with floating-point tensors in float16: how the zoo ships weights."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block (or, as a decorator, the function) with torch's deterministic algorithms on; the
    setting is put back as it was afterwards.

    Why the zoo's training needs it: with the setting off, torch on CPU computes the backward of
    indexing with repeated indices (tiny-sam's per-mask ``features[image_index]``, several masks per
    image) with atomic float adds from all its threads. Where two threads add into the same image's
    row, which adds first depends on how the threads are scheduled, so a training run alone on the
    cores repeats bit for bit and one that shares them with other work sometimes does not (a 60-step
    run parted in its 16th step; benchmarks/RESULTS.md, "A training run repeats under load").
    The setting makes that backward serial, in index order. Strict, not ``warn_only``: the zoo trains
    on CPU, where every op the recipes use has a deterministic form, and an op added later without one
    should fail loudly rather than make runs quietly unrepeatable. The setting is process-wide: other
    threads of the process run with it while the block does (``zoo train`` runs alone in its process).
    """
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


def out_of_budget(step: int, started: float, time_limit_s: float | None, stop_after: int | None) -> bool:
    """Whether a training loop ends before its 0-based ``step``: ``stop_after`` steps have run or, when
    ``stop_after`` is None, ``time_limit_s`` seconds have passed since ``started`` (a
    ``time.perf_counter()`` reading).

    Neither shortens the learning-rate schedule, so ``stop_after`` set to the ``steps_run`` of a run
    replays it on a machine of another speed. The time limit does not apply then: on a slower machine
    it would cut the replay short.
    """
    if stop_after is not None:
        return step >= stop_after
    return time_limit_s is not None and time.perf_counter() - started > time_limit_s


class WeightAverage:
    """An exponential moving average of a model's trainable parameters (Polyak averaging).

    Starts at the model's weights as they are now; each :meth:`update` (after an optimiser step) moves
    the average a fraction ``1 - decay`` of the way to the current weights, so it weighs roughly the
    last ``1 / (1 - decay)`` steps. :meth:`write_to_model` puts the average into the model.

    Not ``torch.optim.swa_utils.AveragedModel``: that keeps a second copy of the module and starts from
    the weights of the first update; this starts from the weights the run starts from, as measured in
    benchmarks/RESULTS.md, and needs no copy to load back.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for a, p in zip(self.average, self.params, strict=True):
            a.lerp_(p, 1.0 - self.decay)

    @torch.no_grad()
    def write_to_model(self) -> None:
        for a, p in zip(self.average, self.params, strict=True):
            p.copy_(a)
