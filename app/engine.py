"""One loaded model version and its two batched compute steps.

`Engine.run(kind, *inputs)` is what the batcher calls on its inference thread: `decode` maps rows of
(z, y) to pixel probabilities, `encode` maps rows of (x, y) to the posterior, the reconstruction at
z = mu and the ELBO terms. Both run under `torch.inference_mode()` on the engine's device; inputs and
outputs are CPU float32 tensors whose first dimension is the row.

A batch is computed in tiles of ROWS_PER_TILE rows. A row's output depends, in its last bit, on the
shape of the matrix product it is part of (BLAS picks kernels by size), and after 8-bit quantisation
that can flip a pixel: a seeded request would not be byte-identical when it lands in a bigger batch.
With one fixed shape every row is computed the same way whatever else shares its batch, so batching
never changes an answer.

The last tile of a batch may be shorter (zero-padded to one of SHORT_TILES rows) when that shape is
*proven* to give every row the same bits as the full tile: `warm_up` computes random probe rows both
ways on this machine's BLAS and device and keeps only the sizes that agree bit for bit (on x86 CPUs
with MKL the even sizes do; odd ones differ). A lone request of 2 rows then pays for a 4-row product
instead of a 16-row one; a shape that differs anywhere is never used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from model.checkpoint import Checkpoint
from model.loss import kl_to_standard_normal, recon_bce
from model.network import CVAE

ROWS_PER_TILE = 16
SHORT_TILES = (4, 6, 8, 10, 12, 14)  # candidate shapes of a batch's last tile, checked by warm_up
PROBES = 3  # random probe batches per candidate shape and kind
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
        self.short_tiles: dict[str, tuple[int, ...]] = {DECODE: (), ENCODE: ()}  # set by warm_up

    def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One batched forward pass of a kind, computed in fixed-shape tiles."""
        if kind == DECODE:
            return _tiled(self.decode_rows, inputs, self.short_tiles[DECODE])
        if kind == ENCODE:
            return _tiled(self.encode_rows, inputs, self.short_tiles[ENCODE])
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
        """Passes of each kind, so the first request does not pay for lazy initialisation, and the
        short last-tile shapes that give the full tile's bits on this machine (`short_tiles`)."""
        generator = torch.Generator().manual_seed(0)
        pixels = self.model.config.image_pixels
        rows = {  # random probe rows of each kind: latents, images
            DECODE: lambda: torch.randn(ROWS_PER_TILE, self.latent_dim, generator=generator),
            ENCODE: lambda: torch.rand(ROWS_PER_TILE, pixels, generator=generator),
        }
        for kind, step in ((DECODE, self.decode_rows), (ENCODE, self.encode_rows)):
            probes = [
                (rows[kind](), torch.randint(0, self.num_classes, (ROWS_PER_TILE,), generator=generator))
                for _ in range(PROBES)
            ]
            self.short_tiles[kind] = matching_tiles(step, probes, SHORT_TILES)
        self.run(DECODE, torch.zeros(2, self.latent_dim), torch.arange(2))
        self.run(ENCODE, torch.zeros(2, pixels), torch.arange(2))


def matching_tiles(
    step: Callable[..., tuple[torch.Tensor, ...]],
    probes: Sequence[tuple[torch.Tensor, ...]],
    sizes: tuple[int, ...],
) -> tuple[int, ...]:
    """The sizes s for which `step` over any s rows of a ROWS_PER_TILE-row probe gives exactly the bits
    of those rows in the full tile, for every probe and offset tried."""
    fulls = [step(*probe) for probe in probes]  # each probe's full tile, computed once

    def agrees(size: int) -> bool:
        return all(
            torch.equal(part, whole[start : start + size])
            for probe, full in zip(probes, fulls, strict=True)
            for start in (0, ROWS_PER_TILE - size)
            for part, whole in zip(step(*(t[start : start + size] for t in probe)), full, strict=True)
        )

    return tuple(size for size in sizes if agrees(size))


def tile_bounds(rows: int, short_tiles: tuple[int, ...]) -> list[tuple[int, int]]:
    """(start, end) of each tile over `rows` rows (the end may pass `rows`: zero padding): full tiles,
    then the last one at the smallest verified short size that holds the rest, else a full one."""
    full, rest = divmod(rows, ROWS_PER_TILE)
    bounds = [(i * ROWS_PER_TILE, (i + 1) * ROWS_PER_TILE) for i in range(full)]
    if rest:
        last = next((size for size in short_tiles if size >= rest), ROWS_PER_TILE)
        bounds.append((full * ROWS_PER_TILE, full * ROWS_PER_TILE + last))
    return bounds


def _tiled(
    step: Callable[..., tuple[torch.Tensor, ...]],
    inputs: tuple[torch.Tensor, ...],
    short_tiles: tuple[int, ...],
) -> tuple[torch.Tensor, ...]:
    """Apply `step` to the tiles of `tile_bounds` (the last one zero-padded) and join the real rows."""
    rows = int(inputs[0].shape[0])
    bounds = tile_bounds(rows, short_tiles)
    pad = bounds[-1][1] - rows if bounds else 0
    if pad:
        inputs = tuple(torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) for t in inputs)
    tiles = [step(*(t[start:end] for t in inputs)) for start, end in bounds]
    if len(tiles) == 1:
        return tuple(part[:rows] for part in tiles[0])
    return tuple(torch.cat(parts)[:rows] for parts in zip(*tiles, strict=True))
