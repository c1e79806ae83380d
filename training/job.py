"""One training run, start to finish: data -> train -> evaluate -> a complete version in the
registry (weights, metadata, samples.png, training.png, metrics.jsonl) -> promoted.

Under torchrun every process trains (DDP, training/distributed.py) and rank 0 alone evaluates and
publishes the version; a single process runs exactly the same code with a world of one.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from model.checkpoint import save_checkpoint
from model.device import resolve_device
from model.network import CVAE
from model.registry import Registry
from training.config import JobConfig
from training.data import Digits, load_data, split
from training.distributed import World, device_for, node_first, process_group, world_from_env
from training.evaluate import elbo_metrics, evaluate
from training.judge import accuracy, load_or_train_judge, to_tensors
from training.loop import train
from training.plots import save_samples_png, save_training_png
from training.presets import preset


@dataclass(frozen=True)
class JobResult:
    """What a run wrote: the version's name and directory, and its metadata (rank 0 only; the
    other ranks of a torchrun job get version None)."""

    version: str | None
    path: Path | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Data:
    """The data of one run: everything loaded, the two training splits, the optional test split."""

    all: Digits
    train: Digits
    val: Digits
    test: Digits | None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _prepare_data(config: JobConfig) -> _Data:
    data, test = load_data(config.data)
    train_set, val_set = split(data, config.val_fraction, config.seed)
    if config.max_examples is not None:
        train_set = train_set.subset(np.arange(min(config.max_examples, len(train_set))))
    return _Data(data, train_set, val_set, test)


def run(config: JobConfig, world: World | None = None) -> JobResult:
    """Train, evaluate and publish one version; the registry only ever sees complete versions."""
    world = world_from_env() if world is None else world
    device = device_for(world, resolve_device(config.device))
    with process_group(world, device):
        return _run(config, world, device)


def _run(config: JobConfig, world: World, device: torch.device) -> JobResult:
    started = time.perf_counter()
    _seed_everything(config.seed)
    log = _logger(config, world)
    with node_first(world):  # under torchrun, the full MNIST is fetched once per node
        data = _prepare_data(config)
    test_note = f", {len(data.test)} test" if data.test is not None else ""
    log(
        f"data: {config.data} ({len(data.train)} train / {len(data.val)} validation{test_note}) on {device}"
        + (f", {world.world_size} processes" if world.distributed else "")
    )
    x, y = to_tensors(data.train, device)
    x_val, y_val = to_tensors(data.val, device)
    model = CVAE(preset(config.preset, latent_dim=config.latent_dim)).to(device)
    if not world.is_main:
        train(model, x, y, x_val, y_val, config.recipe, seed=config.seed, world=world, progress=False)
        return JobResult(version=None, path=None, metadata={})
    registry = Registry(config.registry, writer=True)
    with registry.staging() as staging:
        with (staging / "metrics.jsonl").open("w", encoding="utf-8") as epochs_log:
            history, best_epoch = train(
                model,
                x,
                y,
                x_val,
                y_val,
                config.recipe,
                seed=config.seed,
                world=world,
                progress=config.progress,
                on_epoch=lambda row: _append_jsonl(epochs_log, row),
            )
        train_seconds = time.perf_counter() - started
        log(f"training done in {train_seconds:.0f} s; evaluating")
        splits = {"train": (x, y), "val": (x_val, y_val)}
        if data.test is not None:
            splits["test"] = to_tensors(data.test, device)
        metrics = _measure(config, registry, data, splits, model, device, log)
        temperature = metrics.pop("default_temperature", config.default_temperature)
        metrics.update(best_epoch=best_epoch, epochs_run=len(history))
        metrics["train_seconds"] = round(train_seconds, 2)
        metrics["total_seconds"] = round(time.perf_counter() - started, 2)
        metadata = save_checkpoint(
            staging,
            model,
            _metadata(config, world, data, metrics, history),
            default_temperature=temperature,
        )
        save_samples_png(
            staging / "samples.png", model, temperature=metadata["default_temperature"], seed=config.seed
        )
        save_training_png(staging / "training.png", history)
        version = registry.publish(staging)
    if config.promote:
        registry.promote(version)
    return JobResult(version=version, path=registry.root / version, metadata=metadata)


Log = Callable[[str], None]


def _logger(config: JobConfig, world: World) -> Log:
    """Progress lines, printed by rank 0 only and only when progress is on."""

    def log(message: str) -> None:
        if config.progress and world.is_main:
            print(message, flush=True)

    return log


def _measure(
    config: JobConfig,
    registry: Registry,
    data: _Data,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    model: CVAE,
    device: torch.device,
    log: Log,
) -> dict[str, Any]:
    """ELBO terms on every split's tensors, and the judge-based evaluation unless it is switched off."""
    metrics: dict[str, Any] = {}
    for name, (x, y) in splits.items():
        metrics.update({f"{name}_{k}": v for k, v in elbo_metrics(model, x, y, config.seed).items()})
    if config.evaluate:
        metrics.update(_evaluate(config, registry, data, splits, model, device, log))
    return metrics


def _append_jsonl(log: TextIO, row: dict[str, float]) -> None:
    """One epoch's figures as a JSON line, flushed so the log can be followed while training runs."""
    log.write(json.dumps(row) + "\n")
    log.flush()


def _evaluate(
    config: JobConfig,
    registry: Registry,
    data: _Data,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    model: CVAE,
    device: torch.device,
    log: Log,
) -> dict[str, Any]:
    key = f"{data.all.fingerprint[:16]}-s{config.seed}-v{config.val_fraction}-n{len(data.train)}"
    log(f"judge: loading or training the digit classifier {key}")
    classifier, judge = load_or_train_judge(
        registry,
        key,
        data.train,
        data.val,
        epochs=config.classifier_epochs,
        seed=config.seed,
        device=device,
    )
    log(f"judge: validation accuracy {judge['val_accuracy']:.4f} ({key})")
    metrics = evaluate(
        model,
        classifier,
        *splits["val"],
        temperature=config.default_temperature,
        per_class=config.eval_samples_per_class,
        iw_samples=config.iw_samples,
        seed=config.seed,
        targets=(config.legible_overall, config.legible_worst),
        test=splits.get("test"),
        progress=config.progress,
    )
    metrics["classifier"] = {"key": key, "val_accuracy": judge["val_accuracy"]}
    if "test" in splits:
        metrics["classifier"]["test_accuracy"] = accuracy(classifier, *splits["test"])
    metrics["evaluated_on"] = "test" if "test" in splits else "validation"
    return metrics


def _metadata(
    config: JobConfig,
    world: World,
    data: _Data,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
) -> dict[str, Any]:
    described: dict[str, Any] = {
        "source": config.data,
        "fingerprint": data.all.fingerprint,
        "examples": len(data.all),
        "train_examples": len(data.train),
        "val_examples": len(data.val),
        "split": {"seed": config.seed, "val_fraction": config.val_fraction},
    }
    if data.test is not None:
        described.update(test_fingerprint=data.test.fingerprint, test_examples=len(data.test))
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": config.preset,
        "training": {k: v for k, v in config.to_dict().items() if k not in ("registry", "progress")},
        "data": described,
        "metrics": metrics,
        "history": history,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "world_size": world.world_size,
            "threads_per_process": torch.get_num_threads(),
        },
    }
