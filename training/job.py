"""One training run, start to finish: data -> train -> evaluate -> a complete version in the
registry (weights, metadata, samples.png, training.png, metrics.jsonl) -> promoted."""

from __future__ import annotations

import json
import platform
import random
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from model.checkpoint import save_checkpoint
from model.config import preset
from model.network import CVAE
from model.registry import Registry
from training.classifier import load_or_train_classifier, to_tensors
from training.config import JobConfig
from training.data import Dataset, load_data, split
from training.evaluate import elbo_metrics, evaluate
from training.loop import Recipe, train
from training.plots import save_samples_png, save_training_png


@dataclass(frozen=True)
class JobResult:
    """What a run wrote: the version's name and directory, and its metadata."""

    version: str
    path: Path
    metadata: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else is taken as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _prepare_data(config: JobConfig) -> tuple[Dataset, Dataset, Dataset, Dataset | None]:
    data, test = load_data(config.data)
    train_set, val_set = split(data, config.val_fraction, config.seed)
    if config.max_examples is not None:
        train_set = train_set.subset(np.arange(min(config.max_examples, len(train_set))))
    return data, train_set, val_set, test


def _log(config: JobConfig, message: str) -> None:
    if config.progress:
        print(message, flush=True)


def run(config: JobConfig) -> JobResult:
    """Train, evaluate and publish one version; the registry only ever sees complete versions."""
    started = time.perf_counter()
    _seed_everything(config.seed)
    device = resolve_device(config.device)
    registry = Registry(config.registry)
    data, train_set, val_set, test_set = _prepare_data(config)
    _log(config, f"data: {config.data} ({len(train_set)} train / {len(val_set)} validation) on {device}")
    x, y = to_tensors(train_set, device)
    x_val, y_val = to_tensors(val_set, device)
    net_config = preset(config.preset, latent_dim=config.latent_dim)
    model = CVAE(net_config).to(device)
    recipe = Recipe(**{f.name: getattr(config, f.name) for f in fields(Recipe)})
    with registry.staging() as staging:
        log_path = staging / "metrics.jsonl"
        with log_path.open("w", encoding="utf-8") as log:
            history, best_epoch = train(
                model,
                x,
                y,
                x_val,
                y_val,
                recipe,
                progress=config.progress,
                on_epoch=lambda row: _append_jsonl(log, row),
            )
        train_seconds = time.perf_counter() - started
        splits = {"train": (x, y), "val": (x_val, y_val)}
        if test_set is not None:
            splits["test"] = to_tensors(test_set, device)
        metrics = _measure(config, registry, data, train_set, val_set, splits, model, device)
        metrics.update(best_epoch=best_epoch, epochs_run=len(history))
        temperature = metrics.get("default_temperature", config.default_temperature)
        temperature = 1.0 if temperature is None else temperature
        metrics["train_seconds"] = round(train_seconds, 2)
        metrics["total_seconds"] = round(time.perf_counter() - started, 2)
        metadata = save_checkpoint(
            staging, model, _metadata(config, data, train_set, val_set, metrics, history, temperature)
        )
        save_samples_png(staging / "samples.png", model, temperature=temperature, seed=config.seed)
        save_training_png(staging / "training.png", history)
        version = registry.publish(staging)
    if config.promote:
        registry.promote(version)
    return JobResult(version=version, path=registry.root / version, metadata=metadata)


def _measure(
    config: JobConfig,
    registry: Registry,
    data: Dataset,
    train_set: Dataset,
    val_set: Dataset,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    model: CVAE,
    device: torch.device,
) -> dict[str, Any]:
    """ELBO terms on every split's tensors, and the judge-based evaluation unless it is switched off."""
    metrics: dict[str, Any] = {}
    for name, (x, y) in splits.items():
        metrics.update({f"{name}_{k}": v for k, v in elbo_metrics(model, x, y, config.seed).items()})
    if config.evaluate:
        x_val, y_val = splits["val"]
        metrics.update(_evaluate(config, registry, data, train_set, val_set, model, x_val, y_val, device))
    return metrics


def _append_jsonl(log: TextIO, row: dict[str, float]) -> None:
    """One epoch's figures as a JSON line, flushed so the log can be followed while training runs."""
    log.write(json.dumps(row) + "\n")
    log.flush()


def _evaluate(
    config: JobConfig,
    registry: Registry,
    data: Dataset,
    train_set: Dataset,
    val_set: Dataset,
    model: CVAE,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    key = f"{data.fingerprint[:16]}-s{config.seed}-v{config.val_fraction}-n{len(train_set)}"
    classifier, judge = load_or_train_classifier(
        registry.root,
        key,
        train_set,
        val_set,
        epochs=config.classifier_epochs,
        seed=config.seed,
        device=device,
    )
    _log(config, f"classifier: validation accuracy {judge['val_accuracy']:.4f} ({key})")
    metrics = evaluate(
        model,
        classifier,
        x_val,
        y_val,
        temperature=config.default_temperature,
        per_class=config.eval_samples_per_class,
        iw_samples=config.iw_samples,
        seed=config.seed,
    )
    metrics["classifier"] = {"key": key, "val_accuracy": judge["val_accuracy"]}
    return metrics


def _metadata(
    config: JobConfig,
    data: Dataset,
    train_set: Dataset,
    val_set: Dataset,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    default_temperature: float,
) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": config.preset,
        "training": {k: v for k, v in config.to_dict().items() if k not in ("registry", "progress")},
        "data": {
            "source": config.data,
            "fingerprint": data.fingerprint,
            "examples": len(data),
            "train_examples": len(train_set),
            "val_examples": len(val_set),
            "split": {"seed": config.seed, "val_fraction": config.val_fraction},
        },
        "metrics": metrics,
        "history": history,
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "default_temperature": default_temperature,
    }
