"""One loaded model version and its two batched compute steps.

`Engine.run(kind, *inputs)` is what the batcher calls on its inference thread: `decode` maps rows of
(z, y) to pixel probabilities, `encode` maps rows of (x, y) to the posterior, the reconstruction at
z = mu and the ELBO terms. Both run under `torch.inference_mode()` on the engine's device; inputs and
outputs are CPU float32 tensors whose first dimension is the row.

A batch is computed in tiles of exactly ROWS_PER_TILE rows (the last one zero-padded). A row's output
depends, in its last bit, on the shape of the matrix product it is part of (BLAS picks kernels by
size), and after 8-bit quantisation that can flip a pixel: a seeded request would not be
byte-identical when it lands in a bigger batch. With one fixed shape every row is computed the same
way whatever else shares its batch, so batching never changes an answer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model.checkpoint import Checkpoint
from model.loss import kl_to_standard_normal, recon_bce
from model.network import CVAE

ROWS_PER_TILE = 16
DECODE = "decode"
ENCODE = "encode"


class Engine:
    """A CVAE version on a device, with the compute steps the batcher runs."""

    def __init__(self, version: str, checkpoint: Checkpoint, device: torch.device):
        self.version = version
        self.model: CVAE = checkpoint.model.to(device).eval()
        self.metadata = checkpoint.metadata
        self.device = device
        self.latent_dim = self.model.config.latent_dim
        self.num_classes = self.model.config.num_classes
        self.default_temperature = checkpoint.info.default_temperature

    def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One batched forward pass of a kind, computed in fixed-shape tiles."""
        if kind == DECODE:
            return _tiled(self.decode_rows, inputs)
        if kind == ENCODE:
            return _tiled(self.encode_rows, inputs)
        raise ValueError(f"unknown batch kind {kind!r}")

    @torch.inference_mode()
    def decode_rows(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor]:
        """z (N, latent_dim), y (N,) -> (probs (N, 784),)."""
        probs = self.model.decode(z.to(self.device), y.to(self.device))
        return (probs.float().cpu(),)

    @torch.inference_mode()
    def encode_rows(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (N, 784), y (N,) -> mu, log_var (N, L), reconstruction probs (N, 784), recon BCE, KL (N,)."""
        x, y = x.to(self.device), y.to(self.device)
        mu, log_var = self.model.encode(x, y)
        logits = self.model.decode_logits(mu, y)  # the service's point estimate: z = mu
        recon = recon_bce(logits, x)
        kl = kl_to_standard_normal(mu, log_var)
        outputs = (mu, log_var, torch.sigmoid(logits), recon, kl)
        return tuple(t.float().cpu() for t in outputs)

    def warm_up(self) -> None:
        """One tiny pass of each kind, so the first request does not pay for lazy initialisation."""
        y = torch.arange(2)
        self.run(DECODE, torch.zeros(2, self.latent_dim), y)
        self.run(ENCODE, torch.zeros(2, self.model.config.image_pixels), y)


def _tiled(
    step: Callable[..., tuple[torch.Tensor, ...]], inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Apply `step` to tiles of exactly ROWS_PER_TILE rows (zero-padded) and join the real rows."""
    rows = int(inputs[0].shape[0])
    pad = -rows % ROWS_PER_TILE
    if pad:
        inputs = tuple(torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) for t in inputs)
    tiles = [step(*(t[i : i + ROWS_PER_TILE] for t in inputs)) for i in range(0, rows + pad, ROWS_PER_TILE)]
    return tuple(torch.cat(parts)[:rows] for parts in zip(*tiles, strict=True))
