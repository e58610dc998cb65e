"""Model names -> how to build them and where their weights are.

Official models have no default checkpoint: production passes a URI (``MASKFACTORY_SAM_CHECKPOINT``,
``--checkpoint``) because nothing may be downloaded at run time. The tiny models default to the
checkpoints bundled in ``maskfactory/models/zoo/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segment_anything.modeling import Sam

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings, get_settings
from maskfactory.models import clip as clip_models
from maskfactory.models.sam import TINY_SAM, VIT_B, VIT_H, VIT_L, SamConfig, load_sam
from maskfactory.models.zoo import zoo_path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "sam" or "clip"
    config: SamConfig | dict[str, Any]  # SamConfig, or an open_clip model config dict
    default_checkpoint: str | None  # None: the user must supply one
    note: str


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("vit_h", "sam", VIT_H, None, "official SAM ViT-H (sam_vit_h_4b8939.pth)"),
        ModelSpec("vit_l", "sam", VIT_L, None, "official SAM ViT-L (sam_vit_l_0b3195.pth)"),
        ModelSpec("vit_b", "sam", VIT_B, None, "official SAM ViT-B (sam_vit_b_01ec64.pth)"),
        ModelSpec("tiny-sam", "sam", TINY_SAM, str(zoo_path("tiny-sam.pt")), "bundled, trained on the world"),
        ModelSpec(
            "ViT-B-16",
            "clip",
            clip_models.named_config("ViT-B-16"),
            None,
            "open_clip ViT-B-16 (any checkpoint)",
        ),
        ModelSpec(
            "tiny-clip",
            "clip",
            clip_models.TINY_CLIP,
            str(zoo_path("tiny-clip.pt")),
            "bundled, trained on the world",
        ),
    ]
}


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def resolve_checkpoint(spec: ModelSpec, checkpoint: str | None, settings: Settings) -> str:
    """The checkpoint URI to load: the one given, else the spec's default; it must exist."""
    uri = checkpoint or spec.default_checkpoint
    if uri is None:
        raise ValueError(
            f"{spec.name} has no bundled weights: pass a checkpoint URI ({spec.note}); "
            "nothing is downloaded at run time"
        )
    if not storage.exists(uri, settings):
        hint = " (the zoo's tiny models are trained by `maskfactory zoo train`)" if checkpoint is None else ""
        raise FileNotFoundError(f"{spec.name}: checkpoint {uri} does not exist{hint}")
    return uri


def _spec_and_checkpoint(
    family: str, name: str | None, checkpoint: str | None, settings: Settings
) -> tuple[ModelSpec, str]:
    """The spec and weights URI of a ``family`` model: the one named, else the one settings choose.

    The settings' checkpoint applies only to the settings' model, so naming another model never
    loads the wrong weights into it.
    """
    if family == "sam":
        default_name, default_checkpoint = settings.sam_model, settings.sam_checkpoint
    else:
        default_name, default_checkpoint = settings.clip_model, settings.clip_checkpoint
    spec = get_spec(name or default_name)
    if spec.family != family:
        raise ValueError(f"{spec.name} is a {spec.family} model, not a {family} model")
    if checkpoint is None and spec.name == default_name:
        checkpoint = default_checkpoint
    return spec, resolve_checkpoint(spec, checkpoint, settings)


def load_sam_model(
    name: str | None = None, checkpoint: str | None = None, settings: Settings | None = None
) -> tuple[Sam, str]:
    """SAM by registry name (default: settings.sam_model) with its weights; returns (model, version)."""
    s = settings or get_settings()
    spec, uri = _spec_and_checkpoint("sam", name, checkpoint, s)
    assert isinstance(spec.config, SamConfig)
    return load_sam(uri, spec.config, s, device=s.torch_device())


def load_clip_model(
    name: str | None = None, checkpoint: str | None = None, settings: Settings | None = None
) -> clip_models.LoadedClip:
    """CLIP by registry name (default: settings.clip_model) with its weights and offline tokenizer."""
    s = settings or get_settings()
    spec, uri = _spec_and_checkpoint("clip", name, checkpoint, s)
    assert isinstance(spec.config, dict)
    return clip_models.load_clip(spec.config, uri, s, device=s.torch_device())
