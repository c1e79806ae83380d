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

The MLP decoder is run by `LeanDecoder`: the same operations on the same weights as `CVAE.decode`
with fewer calls around them (no module dispatch, no autograd bookkeeping, the one-hot rows looked
up in a table). `warm_up` uses it only where it gives `CVAE.decode`'s bits on probe rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
        self._decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self.model.decode  # warm_up

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
        probs = self._decode(z.to(self.device), y.to(self.device))
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
        short last-tile shapes that give the full tile's bits on this machine (`short_tiles`); the
        lean decoder where it gives the model's own bits."""
        generator = torch.Generator().manual_seed(0)
        pixels = self.model.config.image_pixels
        rows = {  # random probe rows of each kind: latents, images
            DECODE: lambda: torch.randn(ROWS_PER_TILE, self.latent_dim, generator=generator),
            ENCODE: lambda: torch.rand(ROWS_PER_TILE, pixels, generator=generator),
        }
        lean = LeanDecoder.of(self.model)
        if lean is not None and lean.agrees(self.model, rows[DECODE], generator):
            self._decode = lean
        for kind, step in ((DECODE, self.decode_rows), (ENCODE, self.encode_rows)):
            probes = [
                (rows[kind](), torch.randint(0, self.num_classes, (ROWS_PER_TILE,), generator=generator))
                for _ in range(PROBES)
            ]
            self.short_tiles[kind] = matching_tiles(step, probes, SHORT_TILES)
        self.run(DECODE, torch.zeros(2, self.latent_dim), torch.arange(2))
        self.run(ENCODE, torch.zeros(2, pixels), torch.arange(2))


class LeanDecoder:
    """`CVAE.decode` of an MLP decoder with the fewest calls: the same products, concatenations and
    activations in the same order on the same (detached) weights, so the same bits where `agrees`
    says so; no module dispatch, no autograd bookkeeping (nothing requires a gradient), the one-hot
    rows looked up in a table, the activations in place."""

    def __init__(self, model: CVAE, head: torch.nn.Linear):
        layers: list[torch.nn.Linear] = list(model.decoder.layers)  # type: ignore[arg-type]
        self.layers = [_detached(layer) for layer in layers]
        self.every_layer = model.decoder.every_layer
        self.head = _detached(head)
        self.one_hot = torch.eye(model.config.num_classes, device=head.weight.device)

    @classmethod
    def of(cls, model: CVAE) -> LeanDecoder | None:
        """The lean decoder of `model`, or None when its decoder has another shape (a conv head)."""
        head = model.head
        return cls(model, head) if isinstance(head, torch.nn.Linear) else None

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cond = self.one_hot[y]
        h = z
        for i, (weight, bias) in enumerate(self.layers):
            if i == 0 or self.every_layer:
                h = torch.cat((h, cond), dim=1)
            h = torch.relu_(F.linear(h, weight, bias))
        return torch.sigmoid_(F.linear(h, *self.head))

    def agrees(self, model: CVAE, latents: Callable[[], torch.Tensor], generator: torch.Generator) -> bool:
        """Whether this gives `model.decode`'s bits on PROBES random tiles and their short tiles."""
        device = self.one_hot.device
        with torch.inference_mode():
            for _ in range(PROBES):
                z = latents().to(device)
                y = torch.randint(0, self.one_hot.shape[0], (ROWS_PER_TILE,), generator=generator).to(device)
                for size in (ROWS_PER_TILE, *SHORT_TILES):
                    if not torch.equal(self(z[:size], y[:size]), model.decode(z[:size], y[:size])):
                        return False
        return True


def _detached(linear: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight.detach(), linear.bias.detach()


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
    padded_rows = bounds[-1][1] if bounds else rows
    if padded_rows > rows:
        inputs = tuple(_padded(t, padded_rows) for t in inputs)
    if len(bounds) == 1:  # one tile: the padded inputs as they are
        return tuple(part[:rows] for part in step(*inputs))
    tiles = [step(*(t[start:end] for t in inputs)) for start, end in bounds]
    return tuple(torch.cat(parts)[:rows] for parts in zip(*tiles, strict=True))


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A CPU tensor with zero rows appended up to `rows` (in numpy: two torch calls instead of four)."""
    values = t.numpy()
    padded = np.zeros((rows, *values.shape[1:]), dtype=values.dtype)
    padded[: len(values)] = values
    return torch.from_numpy(padded)
