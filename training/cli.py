"""Command line of the training job: `python -m training` / `cvae-train`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from model.config import PRESETS
from model.errors import ModelError
from model.registry import Registry
from training.config import JobConfig, default_registry, load_config_file, preset_job
from training.data import DataError
from training.job import JobResult, run


def build_parser() -> argparse.ArgumentParser:
    defaults = JobConfig()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the CVAE and write a versioned checkpoint into the registry.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="JSON or TOML file of settings (flags override it)")
    p.add_argument(
        "--data", help="bundled | download | a directory of MNIST-named IDX files", default=argparse.SUPPRESS
    )
    p.add_argument(
        "--registry",
        type=Path,
        help="registry directory ($CVAE_REGISTRY, else ./registry)",
        default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=argparse.SUPPRESS,
        help=f"network preset with its training recipe (default {defaults.preset}); "
        "the defaults shown below are the default preset's",
    )
    p.add_argument(
        "--latent-dim", type=int, default=argparse.SUPPRESS, help="override the preset's latent size"
    )
    p.add_argument(
        "--epochs", type=int, default=argparse.SUPPRESS, help=f"maximum epochs ({defaults.epochs})"
    )
    p.add_argument("--batch-size", type=int, default=argparse.SUPPRESS, help=f"({defaults.batch_size})")
    p.add_argument("--lr", type=float, default=argparse.SUPPRESS, help=f"Adam learning rate ({defaults.lr})")
    p.add_argument("--seed", type=int, default=argparse.SUPPRESS, help=f"({defaults.seed})")
    p.add_argument(
        "--device", default=argparse.SUPPRESS, help="auto (cuda, then mps, then cpu) | cpu | cuda[:N]"
    )
    p.add_argument("--beta", type=float, default=argparse.SUPPRESS, help=f"KL weight ({defaults.beta})")
    p.add_argument(
        "--kl-warmup-epochs",
        type=int,
        default=argparse.SUPPRESS,
        help=f"epochs of linear KL warm-up ({defaults.kl_warmup_epochs})",
    )
    p.add_argument(
        "--adversary-weight",
        type=float,
        default=argparse.SUPPRESS,
        help=f"weight of the class-removing adversary on z, 0 = off ({defaults.adversary_weight})",
    )
    p.add_argument(
        "--augment",
        type=float,
        default=argparse.SUPPRESS,
        help=f"share of each batch shown as a small random affine warp ({defaults.augment})",
    )
    p.add_argument(
        "--cosine-lr",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help=f"decay the learning rate to 0 over --epochs ({defaults.cosine_lr})",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=argparse.SUPPRESS,
        help=f"early stopping: epochs without a better validation loss ({defaults.patience})",
    )
    p.add_argument("--val-fraction", type=float, default=argparse.SUPPRESS, help=f"({defaults.val_fraction})")
    p.add_argument("--max-examples", type=int, default=argparse.SUPPRESS, help="cap the training examples")
    p.add_argument(
        "--default-temperature",
        type=float,
        default=argparse.SUPPRESS,
        help="the version's default temperature (samples grid, conditional accuracy, the service's "
        "default); unset = the highest of 1.0, 0.9, ... 0.5 whose samples the judge reads >= 97%% "
        "overall and >= 93%% for every digit",
    )
    p.add_argument(
        "--no-eval",
        dest="evaluate",
        action="store_false",
        default=argparse.SUPPRESS,
        help="skip the classifier-based evaluation (fast smoke runs)",
    )
    p.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        default=argparse.SUPPRESS,
        help="publish the version without making it active",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS)
    p.add_argument(
        "--if-empty", action="store_true", help="do nothing when the registry already has an active version"
    )
    return p


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The preset's recipe < config file < flags."""
    values = load_config_file(args.config) if args.config else {}
    known = {f.name for f in fields(JobConfig)}
    values.update({k: v for k, v in vars(args).items() if k in known})
    return preset_job(**values)


def print_summary(result: JobResult) -> None:
    m = result.metadata["metrics"]
    lines = [
        f"version {result.version} written to {result.path}",
        f"  validation -ELBO {m['val_neg_elbo']:.2f} nats "
        f"(recon {m['val_recon']:.2f} + KL {m['val_kl']:.2f}; z ~ q)",
    ]
    if "val_iw_nll" in m:
        lines.append(f"  importance-weighted NLL (k={m['iw_samples']}) {m['val_iw_nll']:.2f} nats")
    if "conditional_accuracy" in m:
        ca, cs = m["conditional_accuracy"], m["cross_style_accuracy"]
        lines.append(
            f"  conditional accuracy at the default temperature {ca['temperature']} {ca['overall']:.2%} "
            f"(worst digit {min(ca['per_class']):.2%})"
        )
        by_t = m.get("conditional_accuracy_by_temperature", {})
        lines.append(
            "  by temperature: "
            + ", ".join(f"{t}: {r['overall']:.1%} (worst {r['worst']:.1%})" for t, r in by_t.items())
        )
        lines.append(f"  cross-style accuracy {cs['overall']:.2%} (worst digit {min(cs['per_class']):.2%})")
        lines.append(f"  judge: CNN classifier, validation accuracy {m['classifier']['val_accuracy']:.2%}")
    lines.append(f"  best epoch {m['best_epoch']} of {m['epochs_run']}; {m['total_seconds']:.0f} s in all")
    lines.append(f"  images: {result.path / 'samples.png'}  {result.path / 'training.png'}")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, train, print the summary; exit code 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.if_empty:
            active = Registry(config.registry).active_version()
            if active is not None:
                print(f"registry {config.registry} already serves {active}; nothing to train", flush=True)
                return 0
        result = run(config)
    except (DataError, ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0


__all__ = ["main", "default_registry"]
