"""Measure a registry version on a data set's test split, after the fact:

    python -m training.evaluate_version --registry REGISTRY [--version v0001] [--data mnist]

prints (and returns) the test -ELBO (z ~ q), the importance-weighted NLL and the CVAE's own label
inference (argmax of the ELBO at z = mu, the rule of /encode), the figures the training job records
for data with a test split, so models trained on other data (e.g. the bundled sample) can be compared
on the official test set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from model.errors import ModelError
from model.registry import Registry
from training.data import load_data
from training.errors import DataError
from training.evaluate import elbo_metrics, iw_nll, label_accuracy
from training.judge import to_tensors


def evaluate_version(
    registry: Registry, version: str | None, data: str, *, iw_samples: int = 100, seed: int = 0
) -> dict[str, Any]:
    """The test-split figures of one version (the active one when `version` is None)."""
    _, test = load_data(data)
    if test is None:
        raise DataError(f"{data} has no test split (t10k files)")
    name = registry.resolve(version)
    model = registry.load(name).model
    x, y = to_tensors(test, torch.device("cpu"))
    figures: dict[str, Any] = {"version": name, "data": data, "test_examples": len(test)}
    figures.update({f"test_{k}": v for k, v in elbo_metrics(model, x, y, seed).items()})
    if iw_samples > 0:
        figures["test_iw_nll"] = iw_nll(model, x, y, iw_samples, seed, desc=f"IW NLL k={iw_samples}")
        figures["iw_samples"] = iw_samples
    figures["test_label_accuracy"] = label_accuracy(model, x, y, desc="label inference")
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON; exit code 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_version", description=__doc__)
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--version", help="a version name (default: the active one)")
    parser.add_argument("--data", default="mnist", help="data with a test split (default: the full MNIST)")
    parser.add_argument("--iw-samples", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        figures = evaluate_version(
            Registry(args.registry), args.version, args.data, iw_samples=args.iw_samples
        )
    except (DataError, ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
