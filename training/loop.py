"""The CVAE training loop: Adam on the (KL-weighted) negative ELBO, per-epoch validation, early
stopping on the validation loss, and an optional adversary that keeps the class out of z."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.config import NUM_CLASSES
from model.loss import terms_from
from model.network import CVAE
from training.augment import augment_batch
from training.distributed import SINGLE, EpochOrder, World, all_sum
from training.evaluate import elbo_metrics
from training.recipe import Recipe


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -weight backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.weight * grad, None


def make_adversary(latent_dim: int, width: int = 256) -> nn.Module:
    """The class reader on z that the encoder learns to defeat."""
    return nn.Sequential(
        nn.Linear(latent_dim, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, NUM_CLASSES),
    )


def _batch_loss(
    model: CVAE,
    adversary: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    kl_weight: float,
    adversary_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training loss and the per-example recon and KL terms of one batch."""
    mu, log_var = model.encode(x, y)
    z = model.reparameterize(mu, log_var)
    terms = terms_from(model.decode_logits(z, y), x, mu, log_var)
    loss = (terms.recon + kl_weight * terms.kl).mean()
    if adversary is not None:
        loss = loss + F.cross_entropy(adversary(_ReverseGradient.apply(z, adversary_weight)), y)
    return loss, terms.recon.detach(), terms.kl.detach()


class TrainStep(nn.Module):
    """The CVAE and its adversary as one module whose forward is the training loss of a batch: the
    unit DDP wraps, so every parameter's gradient is averaged across processes."""

    def __init__(self, model: CVAE, adversary: nn.Module | None):
        super().__init__()
        self.model, self.adversary = model, adversary

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, y: torch.Tensor, kl_weight: float, adversary_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _batch_loss(self.model, self.adversary, x, y, kl_weight, adversary_weight)


def _train_epoch(
    step: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    epoch: int,
    order: EpochOrder,
    generator: torch.Generator,
    bar: tqdm | None,
) -> dict[str, float]:
    step.train()
    kl_weight = recipe.kl_weight(epoch)
    sums = torch.zeros(3)  # recon, KL, examples
    for batch in order(epoch).to(x.device).split(recipe.batch_size):
        inputs = augment_batch(x[batch], recipe.augment, generator)
        loss, recon, kl = step(inputs, y[batch], kl_weight, recipe.adversary_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([recon.sum(), kl.sum(), torch.tensor(float(len(batch)))]).cpu()
        if bar is not None:
            bar.set_postfix(loss=f"{float(recon.mean() + kl.mean()):.1f}", refresh=False)
    if order.world.distributed:
        sums = all_sum(sums, order.world, x.device)
    recon_mean, kl_mean = (sums[:2] / sums[2]).tolist()
    return {
        "train_neg_elbo": recon_mean + kl_mean,
        "train_recon": recon_mean,
        "train_kl": kl_mean,
        "kl_weight": kl_weight,
    }


def train(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int = 0,
    world: World = SINGLE,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train in place; leaves the model at its best validation epoch. Returns (history, best epoch).

    Under torchrun (`world.distributed`) the model and adversary train inside DDP on this rank's
    shard of each epoch; every rank validates on the whole validation split, so all take the same
    early-stopping decision."""
    torch.manual_seed(seed + world.rank)  # the sampling noise differs per rank; rank 0 = one process
    generator = torch.Generator().manual_seed(seed + world.rank)  # batches' augmentation
    adversary = None
    if recipe.adversary_weight > 0:
        adversary = make_adversary(model.config.latent_dim).to(x.device)
    step: nn.Module = TrainStep(model, adversary)
    optimizer = torch.optim.Adam(step.parameters(), lr=recipe.lr)
    if world.distributed:  # DDP copies rank 0's initial weights to every rank
        device_ids = [x.device.index] if x.device.type == "cuda" else None
        step = DistributedDataParallel(step, device_ids=device_ids)
    order = EpochOrder(len(x), world, seed, generator)
    # Cosine decay to 0 over the planned epochs: the last epochs take small steps and settle.
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs) if recipe.cosine_lr else None
    )
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    show = progress and world.is_main
    bar = tqdm(range(recipe.epochs), desc="training", unit="epoch", disable=not show, dynamic_ncols=True)
    started = time.perf_counter()
    for epoch in bar:
        row = {
            "epoch": epoch + 1,
            **_train_epoch(step, optimizer, x, y, recipe, epoch, order, generator, bar),
        }
        row["lr"] = optimizer.param_groups[0]["lr"]
        if schedule is not None:
            schedule.step()
        row.update({f"val_{k}": v for k, v in elbo_metrics(model, x_val, y_val, seed=seed).items()})
        row["elapsed_s"] = round(time.perf_counter() - started, 2)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        bar.set_postfix(train=f"{row['train_neg_elbo']:.1f}", val=f"{row['val_neg_elbo']:.1f}")
        # Only epochs at full KL weight compete: a warm-up epoch's ELBO is not comparable.
        if row["kl_weight"] >= recipe.beta and row["val_neg_elbo"] < best_loss:
            best_loss, best_epoch, best_state = (
                row["val_neg_elbo"],
                epoch + 1,
                copy.deepcopy(model.state_dict()),
            )
        elif epoch + 1 - max(best_epoch, recipe.kl_warmup_epochs) >= recipe.patience:
            break
    if best_epoch == 0:  # the run ended inside the warm-up: keep its last state
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch
