"""Evaluation of a trained CVAE: ELBO terms, importance-weighted NLL, and what a digit classifier
reads in its samples (conditional accuracy) and in cross-style renderings (style, not class, in z)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from tqdm import tqdm

from model.config import NUM_CLASSES
from model.digit_classifier import DigitClassifier
from model.loss import elbo_terms, importance_weighted_nll, infer_labels
from model.network import CVAE


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs for a block and restore their state afterwards, so evaluating between
    epochs does not change the training run's random stream."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _in_chunks(fn, *tensors: torch.Tensor, size: int = 1000, desc: str | None = None) -> torch.Tensor:
    """fn over chunks of the tensors' rows, joined; a progress bar when `desc` is given."""
    chunks = list(zip(*(t.split(size) for t in tensors), strict=True))
    bar = tqdm(chunks, desc=desc, unit="chunk", disable=desc is None, dynamic_ncols=True, leave=False)
    return torch.cat([fn(*parts) for parts in bar])


@torch.no_grad()
def elbo_metrics(model: CVAE, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean -ELBO with z ~ q (not z = mu) and its two terms, in nats per example."""
    model.eval()
    with seeded(seed, x.device):
        terms = [
            elbo_terms(model, a, b, sample=True) for a, b in zip(x.split(1000), y.split(1000), strict=True)
        ]
    recon = torch.cat([t.recon for t in terms])
    kl = torch.cat([t.kl for t in terms])
    return {"neg_elbo": float((recon + kl).mean()), "recon": float(recon.mean()), "kl": float(kl.mean())}


@torch.no_grad()
def iw_nll(
    model: CVAE, x: torch.Tensor, y: torch.Tensor, k: int, seed: int, desc: str | None = None
) -> float:
    """Mean importance-weighted estimate of -log p(x|y) with k samples."""
    model.eval()
    with seeded(seed, x.device):
        nll = _in_chunks(lambda a, b: importance_weighted_nll(model, a, b, k=k), x, y, size=100, desc=desc)
    return float(nll.mean())


@torch.no_grad()
def read_as(classifier: DigitClassifier, images: torch.Tensor) -> torch.Tensor:
    """The digit the classifier reads in each image (B, 784): (B,)."""
    classifier.eval()
    return _in_chunks(lambda chunk: classifier(chunk).argmax(1), images, size=2000)


@torch.no_grad()
def label_accuracy(model: CVAE, x: torch.Tensor, y: torch.Tensor, desc: str | None = None) -> dict[str, Any]:
    """How often the CVAE's own label inference (argmax over labels of the ELBO at z = mu, the
    rule of /encode without a label) finds the true label, overall and per digit."""
    model.eval()
    correct = _in_chunks(lambda chunk: infer_labels(model, chunk), x, size=500, desc=desc) == y
    return {"overall": float(correct.float().mean()), "per_class": _per_class(correct, y), "examples": len(y)}


def _per_class(correct: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [float(correct[labels == k].float().mean()) for k in range(NUM_CLASSES)]


@torch.no_grad()
def conditional_accuracy(
    model: CVAE, classifier: DigitClassifier, *, per_class: int, temperature: float, seed: int
) -> dict[str, Any]:
    """Share of samples z = temperature * eps that the classifier reads as the requested digit."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class).to(device)
    eps = torch.randn(len(labels), model.config.latent_dim, generator=generator).to(device)
    correct = read_as(classifier, model.decode(temperature * eps, labels)) == labels
    return {
        "overall": float(correct.float().mean()),
        "per_class": _per_class(correct, labels),
        "temperature": temperature,
        "samples_per_class": per_class,
    }


@torch.no_grad()
def cross_style_accuracy(
    model: CVAE, classifier: DigitClassifier, x: torch.Tensor, y: torch.Tensor, desc: str | None = None
) -> dict[str, Any]:
    """Encode each image (z = mu), render every other digit with that z, and count how often the
    classifier reads the requested digit: high only when z carries style and not class."""
    model.eval()
    mu, _ = model.encode(x, y)
    hits, totals = torch.zeros(NUM_CLASSES), torch.zeros(NUM_CLASSES)
    digits = tqdm(range(NUM_CLASSES), desc=desc, unit="digit", disable=desc is None, leave=False)
    for digit in digits:
        others = y != digit
        target = torch.full((int(others.sum()),), digit, device=x.device)
        correct = read_as(classifier, model.decode(mu[others], target)) == digit
        hits[digit], totals[digit] = correct.sum().cpu(), len(correct)
    return {
        "overall": float(hits.sum() / totals.sum()),
        "per_class": (hits / totals).tolist(),
        "renderings": int(totals.sum()),
    }


TEMPERATURES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
TARGET_OVERALL, TARGET_WORST = 0.97, 0.93


def choose_temperature(
    by_temperature: dict[float, dict[str, Any]],
    overall: float = TARGET_OVERALL,
    worst: float = TARGET_WORST,
) -> float:
    """The highest temperature (the most varied writing) whose samples the judge reads as the
    requested digit at least `overall` overall and `worst` for every digit; when none does, the
    most legible one."""
    good = [t for t, r in by_temperature.items() if r["overall"] >= overall and min(r["per_class"]) >= worst]
    if good:
        return max(good)
    return max(by_temperature, key=lambda t: (by_temperature[t]["overall"], t))


def split_figures(
    model: CVAE,
    classifier: DigitClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    iw_samples: int,
    seed: int,
    name: str,
    progress: bool = False,
) -> dict[str, Any]:
    """IW NLL, the CVAE's label inference and cross-style accuracy on one split's tensors."""
    desc = (lambda what: f"{name}: {what}") if progress else (lambda what: None)
    figures: dict[str, Any] = {}
    if iw_samples > 0:
        figures["iw_nll"] = iw_nll(model, x, y, iw_samples, seed, desc=desc(f"IW NLL k={iw_samples}"))
    figures["label_accuracy"] = label_accuracy(model, x, y, desc=desc("label inference"))
    figures["cross_style_accuracy"] = cross_style_accuracy(model, classifier, x, y, desc=desc("cross-style"))
    return figures


def evaluate(
    model: CVAE,
    classifier: DigitClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    temperature: float | None,
    per_class: int,
    iw_samples: int,
    seed: int,
    targets: tuple[float, float] = (TARGET_OVERALL, TARGET_WORST),
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The judge-based figures: conditional accuracy of generated digits, and the IW NLL, label
    inference and cross-style accuracy on the test split when there is one (keys `test_*`), else
    on the validation tensors x (N, 784), y (N,).

    `temperature=None` measures conditional accuracy over TEMPERATURES and picks the service's
    default with `choose_temperature` (at the legibility `targets`); a given temperature is used
    as it is."""
    metrics: dict[str, Any] = {}
    if iw_samples > 0:
        metrics["iw_samples"] = iw_samples
    if test is None:
        val = split_figures(
            model, classifier, x, y, iw_samples=iw_samples, seed=seed, name="validation", progress=progress
        )
        if iw_samples > 0:
            metrics["val_iw_nll"] = val["iw_nll"]
        metrics["cross_style_accuracy"] = val["cross_style_accuracy"]
        metrics["val_label_accuracy"] = val["label_accuracy"]
    candidates = TEMPERATURES if temperature is None else (temperature,)
    by_temperature = {
        t: conditional_accuracy(model, classifier, per_class=per_class, temperature=t, seed=seed)
        for t in candidates
    }
    chosen = choose_temperature(by_temperature, *targets) if temperature is None else temperature
    metrics["default_temperature"] = chosen
    metrics["conditional_accuracy"] = by_temperature[chosen]
    metrics["conditional_accuracy_by_temperature"] = {
        str(t): {"overall": r["overall"], "worst": min(r["per_class"])} for t, r in by_temperature.items()
    }
    if test is not None:  # the figures of record; their validation copies would only cost time
        figures = split_figures(
            model, classifier, *test, iw_samples=iw_samples, seed=seed, name="test", progress=progress
        )
        metrics.update({f"test_{k}": v for k, v in figures.items()})
    return metrics
