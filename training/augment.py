"""Training-time augmentation: small random affine warps (rotation, scale, shift) of digit images.

With 9,000 training digits the decoder overfits; showing it slightly rotated, scaled and shifted
copies (a share `p` of each batch) regularises it and lowers the validation loss. Runs batched on
the training device through `affine_grid` / `grid_sample`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.config import IMAGE_SIDE

MAX_ROTATION_RAD = 0.15  # about 8.6 degrees
MAX_SCALE = 0.08  # +-8 %
MAX_SHIFT = 0.06  # +-6 % of the half-width, about 0.8 px


def random_affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Warp each image of x (B, 784) in [0, 1] by its own random small affine map."""
    batch = len(x)
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * MAX_ROTATION_RAD
    scale = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * MAX_SCALE
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * MAX_SHIFT
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    theta = theta.to(x.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, [batch, 1, IMAGE_SIDE, IMAGE_SIDE], align_corners=False)
    warped = F.grid_sample(
        x.view(batch, 1, IMAGE_SIDE, IMAGE_SIDE), grid, align_corners=False, padding_mode="zeros"
    )
    return warped.view(batch, -1).clamp(0, 1)


def augment_batch(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A copy of x where a random `share` of the rows is warped; x itself when share is 0."""
    if share <= 0:
        return x
    chosen = (torch.rand(len(x), generator=generator) < share).to(x.device)
    if not bool(chosen.any()):
        return x
    out = x.clone()
    out[chosen] = random_affine(x[chosen], generator)
    return out
