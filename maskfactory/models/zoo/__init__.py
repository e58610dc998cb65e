"""The bundled tiny checkpoints (tiny-sam, tiny-clip, ...) and how they were trained.

Checkpoint files live next to this module; `zoo_path(name)` finds one. The training scripts that
produce them land with the synthetic world (issue 3); until then the folder holds no checkpoints and
loading a zoo model says so.
"""

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent


def zoo_path(filename: str) -> Path:
    """Path of a bundled checkpoint file (which may not exist yet)."""
    return ZOO_DIR / filename
