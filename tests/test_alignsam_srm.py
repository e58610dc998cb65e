"""The semantic recalibration module: both branches, per-image attention, its loss and its labels."""

from __future__ import annotations

import pytest
import torch

from maskfactory.models.alignsam.srm import SemanticRecalibration, extreme_points, point_labels, srm_loss


def inputs(b: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 32, 8, 8, generator=g),
        torch.randn(b, 1, 32, 32, generator=g),
        torch.rand(b, 14, 14, generator=g),
    )


@pytest.mark.parametrize("explicit", [False, True])
def test_both_branches_map_the_embedding_grid(explicit: bool) -> None:
    torch.manual_seed(0)
    srm = SemanticRecalibration(32, 8, explicit=explicit)
    features, previous, text = inputs()
    assert srm(features, previous, text).shape == (3, 1, 8, 8)


def test_the_explicit_branch_needs_and_uses_the_text_map() -> None:
    torch.manual_seed(0)
    srm = SemanticRecalibration(32, 8, explicit=True)
    features, previous, text = inputs()
    with pytest.raises(ValueError, match="text map"):
        srm(features, previous)
    assert not torch.allclose(srm(features, previous, text), srm(features, previous, text.flip(-1)))
    implicit = SemanticRecalibration(32, 8, explicit=False)
    assert torch.equal(implicit(features, previous, text), implicit(features, previous, text.flip(-1)))


@pytest.mark.parametrize("explicit", [False, True])
def test_no_image_sees_another_in_the_batch(explicit: bool) -> None:
    """Self-attention runs over each image's positions only: changing image 1 leaves image 0 alone."""
    torch.manual_seed(0)
    srm = SemanticRecalibration(32, 8, explicit=explicit).eval()
    features, previous, text = inputs()
    other_features, other_previous, other_text = inputs(seed=1)
    changed = srm(
        torch.cat([features[:1], other_features[1:]]),
        torch.cat([previous[:1], other_previous[1:]]),
        torch.cat([text[:1], other_text[1:]]),
    )
    assert torch.allclose(changed[0], srm(features, previous, text)[0], atol=1e-6)


def test_srm_learns_a_target_from_the_state() -> None:
    """A few Dice + BCE updates fit a target that the embedding encodes (a loss that can fail)."""
    torch.manual_seed(0)
    features, previous, text = inputs(b=4)
    target = (features[:, :1] > 0).float()  # foreground wherever channel 0 is positive
    srm = SemanticRecalibration(32, 8, explicit=True)
    optim = torch.optim.Adam(srm.parameters(), lr=3e-3)
    first = srm_loss(srm(features, previous, text), target).item()
    for _ in range(60):
        loss = srm_loss(srm(features, previous, text), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.5 * first, (first, loss.item())
    assert srm_loss(torch.where(target > 0, 20.0, -20.0), target) < 1e-3  # a perfect map costs nothing


def test_labels_and_first_prompts_come_from_the_srm_map() -> None:
    logits = torch.full((2, 1, 4, 4), -1.0)
    logits[0, 0, 1, 2] = 3.0  # image 0: most foreground at row 1, column 2
    logits[0, 0, 3, 0] = -4.0
    logits[1, 0, 0, 0] = 2.0
    logits[1, 0, 3, 3] = 5.0  # image 1's best cell lies in the padding when the image is 48 px tall
    points = torch.tensor([[40.0, 20.0], [40.0, 20.0]])  # cell (1, 2) of a 64 px frame in both
    assert point_labels(logits, points, 64).tolist() == [1, 0]
    coords, labels = extreme_points(logits, 64)
    assert coords[0].tolist() == [[40.0, 24.0], [8.0, 56.0]] and labels.tolist() == [[1, 0], [1, 0]]
    coords, _ = extreme_points(logits, 64, frames=[(48, 64)] * len(logits))
    assert coords[1, 0].tolist() == [8.0, 8.0]  # the best cell on the image, not in the padding
