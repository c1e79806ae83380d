"""The pictures each version carries: a samples grid (one row per digit) and the loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model.config import IMAGE_SIDE, NUM_CLASSES  # noqa: E402
from model.network import CVAE  # noqa: E402


@torch.no_grad()
def samples_grid(model: CVAE, *, per_row: int, temperature: float, seed: int) -> np.ndarray:
    """uint8 image (10*28, per_row*28): row d holds `per_row` samples of digit d."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(per_row, model.config.latent_dim, generator=generator)
    z = (temperature * eps).repeat(NUM_CLASSES, 1).to(device)  # same writers in every row
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_row).to(device)
    pixels = model.decode(z, labels).cpu().numpy().reshape(NUM_CLASSES, per_row, IMAGE_SIDE, IMAGE_SIDE)
    grid = pixels.transpose(0, 2, 1, 3).reshape(NUM_CLASSES * IMAGE_SIDE, per_row * IMAGE_SIDE)
    return np.rint(grid * 255).astype(np.uint8)


def save_samples_png(path: Path, model: CVAE, *, temperature: float, seed: int, per_row: int = 10) -> None:
    """Write the samples grid as an 8-bit grayscale PNG, upscaled 2x for viewing."""
    grid = samples_grid(model, per_row=per_row, temperature=temperature, seed=seed)
    image = Image.fromarray(grid, mode="L")
    image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST).save(path, optimize=True)


def save_training_png(path: Path, history: list[dict[str, float]]) -> None:
    """Loss curves per epoch: train and validation -ELBO, and their reconstruction and KL terms."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(
        axes,
        ("neg_elbo", "recon", "kl"),
        ("-ELBO (nats)", "reconstruction BCE (nats)", "KL (nats)"),
        strict=True,
    ):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
