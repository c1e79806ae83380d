"""Command line of the training job: `python -m training` / `cvae-train`."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.registry import Registry
from training.config import (
    JOB_FIELDS,
    RECIPE_FIELDS,
    JobConfig,
    default_registry,
    load_config_file,
    preset_job,
)
from training.errors import DataError
from training.job import JobResult, run
from training.recipe import Recipe


def _flag_type(annotation: Any) -> Any:
    """The argparse type of a field annotation: int, float, str or Path (Optional unwrapped)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _add_field(group: argparse._ArgumentGroup, f: Field, hint: Any, default: Any) -> None:
    """One flag for a dataclass field: --name-with-dashes, or --x/--no-x for a boolean."""
    help_text = f.metadata.get("help", "")
    if default is not None:
        help_text += f" ({default})"
    flag = "--" + f.metadata.get("flag", f.name).replace("_", "-")
    if hint is bool:
        action = argparse.BooleanOptionalAction
        group.add_argument(flag, dest=f.name, action=action, default=argparse.SUPPRESS, help=help_text)
        return
    group.add_argument(
        flag,
        dest=f.name,
        type=_flag_type(hint),
        choices=f.metadata.get("choices"),
        default=argparse.SUPPRESS,
        help=help_text,
    )


def build_parser() -> argparse.ArgumentParser:
    """One flag per JobConfig and Recipe field; shown defaults are the default preset's."""
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the CVAE and write a versioned checkpoint into the registry. "
        "Settings: the preset's < a --config file < flags.",
    )
    p.add_argument("--config", type=Path, help="JSON or TOML file of settings (flags override it)")
    p.add_argument(
        "--if-empty", action="store_true", help="do nothing when the registry already has an active version"
    )
    job, recipe = JobConfig(), Recipe()
    for owner, title in ((job, "job"), (recipe, "recipe (the preset's, unless given)")):
        group = p.add_argument_group(title)
        hints = typing.get_type_hints(type(owner))
        for f in fields(owner):
            if f.name != "recipe":
                _add_field(group, f, hints[f.name], getattr(owner, f.name))
    return p


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The preset's recipe < config file < flags."""
    values = load_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in JOB_FIELDS | RECIPE_FIELDS})
    return preset_job(**values)


def _pct(figures: dict[str, Any]) -> str:
    return f"{figures['overall']:.2%} (worst digit {min(figures['per_class']):.2%})"


def _elbo_terms(m: dict[str, Any], split: str) -> str:
    """`-ELBO X nats (recon R + KL K; z ~ q)` of one split's figures."""
    return (
        f"-ELBO {m[f'{split}_neg_elbo']:.2f} nats "
        f"(recon {m[f'{split}_recon']:.2f} + KL {m[f'{split}_kl']:.2f}; z ~ q)"
    )


def _test_lines(m: dict[str, Any], examples: int | None) -> list[str]:
    """The test split's figures (data with t10k files): the model never saw these digits."""
    lines = [
        f"  test split ({examples} digits, never trained on):",
        f"    test {_elbo_terms(m, 'test')}",
    ]
    if "test_iw_nll" in m:
        lines.append(f"    test importance-weighted NLL (k={m['iw_samples']}) {m['test_iw_nll']:.2f} nats")
    if "test_label_accuracy" in m:
        lines.append(f"    label inferred by the CVAE (argmax of the ELBO) {_pct(m['test_label_accuracy'])}")
        lines.append(f"    cross-style accuracy {_pct(m['test_cross_style_accuracy'])}")
        lines.append(f"    judge accuracy {m['classifier']['test_accuracy']:.2%}")
    return lines


def print_summary(result: JobResult) -> None:
    """The version's figures as printed at the end of a run."""
    assert result.path is not None
    m = result.metadata["metrics"]
    lines = [
        f"version {result.version} written to {result.path}",
        f"  validation {_elbo_terms(m, 'val')}",
    ]
    if "val_iw_nll" in m:
        lines.append(f"  importance-weighted NLL (k={m['iw_samples']}) {m['val_iw_nll']:.2f} nats")
    if "conditional_accuracy" in m:
        ca = m["conditional_accuracy"]
        lines.append(f"  conditional accuracy at the default temperature {ca['temperature']} {_pct(ca)}")
        by_t = m.get("conditional_accuracy_by_temperature", {})
        lines.append(
            "  by temperature: "
            + ", ".join(f"{t}: {r['overall']:.1%} (worst {r['worst']:.1%})" for t, r in by_t.items())
        )
        if "cross_style_accuracy" in m:  # measured on validation when there is no test split
            lines.append(f"  cross-style accuracy {_pct(m['cross_style_accuracy'])}")
            lines.append(f"  label inferred by the CVAE (argmax of the ELBO) {_pct(m['val_label_accuracy'])}")
        lines.append(f"  judge: CNN classifier, validation accuracy {m['classifier']['val_accuracy']:.2%}")
    if "test_neg_elbo" in m:
        lines += _test_lines(m, result.metadata["data"].get("test_examples"))
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
    if result.version is not None:  # rank 0 of a torchrun job, or the only process
        print_summary(result)
    return 0


__all__ = ["main", "default_registry"]
