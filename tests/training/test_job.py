"""The training job end to end on tiny settings: a loadable version, determinism, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import sha256_file
from model.registry import Registry
from tests.builders.models import train_tiny
from training.cli import main
from training.evaluate_version import evaluate_version
from training.evaluate_version import main as evaluate_version_main
from training.idx import write_idx


def test_a_short_run_writes_a_complete_loadable_version(tmp_path: Path) -> None:
    result = train_tiny(tmp_path, epochs=2)
    registry = Registry(tmp_path)
    assert result.version == "v0001" == registry.active_version()
    for name in ("model.safetensors", "metadata.json", "samples.png", "training.png", "metrics.jsonl"):
        assert (result.path / name).stat().st_size > 0
    metadata = registry.load().metadata
    assert metadata["data"]["fingerprint"] == result.metadata["data"]["fingerprint"]
    assert metadata["data"]["split"] == {"seed": 0, "val_fraction": 0.1}
    history = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["val_neg_elbo"] < history[0]["val_neg_elbo"]
    metrics = metadata["metrics"]
    assert metrics["val_neg_elbo"] == pytest.approx(metrics["val_recon"] + metrics["val_kl"])


def test_same_seed_same_weights_on_cpu(tmp_path: Path) -> None:
    first = train_tiny(tmp_path / "a", epochs=2, device="cpu")
    second = train_tiny(tmp_path / "b", epochs=2, device="cpu")
    other = train_tiny(tmp_path / "c", epochs=2, device="cpu", seed=1)
    assert first.metadata["weights_sha256"] == second.metadata["weights_sha256"]
    assert sha256_file(first.path / "model.safetensors") == sha256_file(second.path / "model.safetensors")
    assert other.metadata["weights_sha256"] != first.metadata["weights_sha256"]


def test_evaluation_writes_judge_based_figures(tmp_path: Path) -> None:
    result = train_tiny(
        tmp_path, epochs=2, evaluate=True, classifier_epochs=1, eval_samples_per_class=20, iw_samples=5
    )
    metrics = result.metadata["metrics"]
    assert 0.5 < metrics["classifier"]["val_accuracy"] <= 1
    for key in ("conditional_accuracy", "cross_style_accuracy"):
        assert 0 <= metrics[key]["overall"] <= 1 and len(metrics[key]["per_class"]) == 10
    assert metrics["val_iw_nll"] <= metrics["val_neg_elbo"] + 1.0
    # The judge is kept beside the versions and reused by the next run on the same split.
    judges = list((tmp_path / "classifier").iterdir())
    assert len(judges) == 1 and (judges[0] / "model.safetensors").is_file()
    again = train_tiny(
        tmp_path, epochs=1, evaluate=True, classifier_epochs=1, eval_samples_per_class=20, iw_samples=5
    )
    assert again.metadata["metrics"]["classifier"] == metrics["classifier"]


def test_cli_trains_on_an_idx_directory_with_a_config_file(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    data_dir = tmp_path / "fashion"
    data_dir.mkdir()
    write_idx(data_dir / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (300, 28, 28), dtype=np.uint8))
    write_idx(data_dir / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 300, dtype=np.uint8))
    config = tmp_path / "train.toml"
    config.write_text('preset = "tiny"\nepochs = 1\nkl-warmup-epochs = 0\n')
    registry = tmp_path / "registry"
    code = main(
        [
            "--config",
            str(config),
            "--data",
            str(data_dir),
            "--registry",
            str(registry),
            "--no-eval",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "version v0001 written" in out and "validation -ELBO" in out
    assert Registry(registry).load().metadata["data"]["source"] == str(data_dir)
    assert main(["--if-empty", "--registry", str(registry)]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert Registry(registry).version_names() == ["v0001"]


def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path / "missing"), "--registry", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochz": 3}')
    assert main(["--config", str(bad), "--registry", str(tmp_path / "r")]) == 2
    assert "unknown settings" in capsys.readouterr().err


def test_a_given_default_temperature_is_kept_even_zero(tmp_path: Path) -> None:
    result = train_tiny(tmp_path, epochs=1, default_temperature=0.0)
    assert result.metadata["default_temperature"] == 0.0
    assert train_tiny(tmp_path, epochs=1).metadata["default_temperature"] == 1.0  # no evaluation: the prior


def _mnist_like(directory: Path, train: int = 300, test: int = 100) -> Path:
    """An MNIST-named directory with a t10k test split (random pixels: fast, not meaningful)."""
    rng = np.random.default_rng(1)
    directory.mkdir()
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        )
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))
    return directory


def test_a_test_split_is_evaluated_recorded_and_reproduced_after_the_fact(tmp_path: Path, capsys) -> None:
    data = _mnist_like(tmp_path / "data")
    result = train_tiny(
        tmp_path / "r",
        data=str(data),
        epochs=1,
        evaluate=True,
        classifier_epochs=1,
        eval_samples_per_class=5,
        iw_samples=3,
    )
    metadata, m = result.metadata, result.metadata["metrics"]
    assert metadata["data"]["test_examples"] == 100 and len(metadata["data"]["test_fingerprint"]) == 64
    assert m["evaluated_on"] == "test"
    assert m["test_label_accuracy"]["examples"] == 100 and 0 <= m["test_label_accuracy"]["overall"] <= 1
    assert (
        len(m["test_cross_style_accuracy"]["per_class"]) == 10 and 0 <= m["classifier"]["test_accuracy"] <= 1
    )
    assert m["test_iw_nll"] <= m["test_neg_elbo"] + 5.0
    assert "default_temperature" not in m  # stored once, at the top level
    figures = evaluate_version(Registry(tmp_path / "r"), None, str(data), iw_samples=3)
    for key in ("test_neg_elbo", "test_iw_nll", "test_label_accuracy"):
        assert figures[key] == m[key], key
    assert evaluate_version_main(["--registry", str(tmp_path / "r"), "--data", "bundled"]) == 2
    assert "no test split" in capsys.readouterr().err
