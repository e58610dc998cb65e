"""The bundled tiny checkpoints (tiny-sam, tiny-clip, ...) and how they were trained.

Checkpoint files live next to this module; `zoo_path(name)` finds one. `train_sam.py` and
`train_clip.py` are the recipes; `maskfactory zoo train NAME` (maskfactory/tasks/zoo.py) trains them on
the synthetic world. tiny-sam.pt and tiny-clip.pt ship.
alignsam-TASK.pt are AlignSAM agents for the five synthetic tasks on tiny-sam (50 shots), trained by
``benchmarks/alignsam_tables.py --ship`` (equivalently ``maskfactory policy train``).
"""

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent


def zoo_path(filename: str) -> Path:
    """Path of a bundled checkpoint file (which may not exist yet)."""
    return ZOO_DIR / filename
