"""The evaluation judge: a small CNN digit classifier, trained on the same training split and kept
as an artifact of the registry (`<registry>/classifier/<key>/`), reused by later runs on the same
data. The registry writes it (staging directory, then an atomic publish), as it writes versions."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import load_module, save_module
from model.config import IMAGE_SIDE
from model.digit_classifier import ClassifierConfig, DigitClassifier
from model.errors import CheckpointError
from model.registry import Registry
from training.data import Digits
from training.evaluate import read_as

CLASSIFIER_DIR = "classifier"


def to_tensors(data: Digits, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float (N, 784) in [0, 1] and labels as long (N,) on a device."""
    x = torch.from_numpy(data.images.reshape(len(data), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(data.labels.astype(np.int64))
    return x.to(device), y.to(device)


def accuracy(classifier: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of images the classifier reads as their label."""
    return float((read_as(classifier, x) == y).float().mean())


def _shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 2 px: cheap augmentation that makes the judge robust."""
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(batch.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE), shifts=(dy, dx), dims=(2, 3))


def train_judge(
    train: Digits, val: Digits, *, epochs: int, seed: int, device: torch.device
) -> tuple[DigitClassifier, float]:
    """Train the judge with Adam; returns it with its validation accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classifier = DigitClassifier().to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    x, y = to_tensors(train, device)
    for _ in range(epochs):
        classifier.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        for batch in order.split(64):
            loss = F.cross_entropy(classifier(_shift(x[batch], generator)), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return classifier, accuracy(classifier, *to_tensors(val, device))


def load_or_train_judge(
    registry: Registry,
    key: str,
    train: Digits,
    val: Digits,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """The judge for this data split: loaded from the registry when present, else trained and
    published there."""
    name = f"{CLASSIFIER_DIR}/{key}"
    try:
        return load_module(
            registry.artifact_path(name), lambda cfg: DigitClassifier(ClassifierConfig.from_dict(cfg)), device
        )
    except CheckpointError:
        pass
    started = time.perf_counter()
    classifier, val_accuracy = train_judge(train, val, epochs=epochs, seed=seed, device=device)
    with registry.staging() as staging:
        metadata = save_module(
            staging,
            classifier,
            classifier.config.to_dict(),
            {
                "kind": "digit-classifier",
                "val_accuracy": val_accuracy,
                "epochs": epochs,
                "train_seconds": round(time.perf_counter() - started, 2),
                "key": key,
            },
        )
        registry.publish_artifact(staging, name)
    return classifier.eval(), metadata
