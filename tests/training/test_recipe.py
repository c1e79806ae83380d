"""Pieces of the training recipe: augmentation, KL warm-up, the class adversary, presets' recipes."""

import json
import re
from dataclasses import fields

import pytest
import torch

from model.network import CVAE
from training import cli
from training.augment import augment_batch, random_affine
from training.cli import build_parser, config_from_args
from training.config import JOB_FIELDS, JobConfig, load_config_file, preset_job
from training.loop import _batch_loss, make_adversary
from training.presets import PRESETS, preset
from training.recipe import Recipe


def _digit_like(batch: int) -> torch.Tensor:
    x = torch.zeros(batch, 28, 28)
    x[:, 6:22, 12:16] = 1.0  # a vertical bar, like a "1"
    return x.view(batch, -1)


def test_random_affine_keeps_range_shape_and_most_of_the_ink() -> None:
    x = _digit_like(16)
    warped = random_affine(x, torch.Generator().manual_seed(0))
    assert warped.shape == x.shape and float(warped.min()) >= 0 and float(warped.max()) <= 1
    assert not torch.equal(warped, x)
    ratio = warped.sum(1) / x.sum(1)
    assert torch.all((ratio > 0.75) & (ratio < 1.3))


def test_augment_batch_warps_about_the_requested_share() -> None:
    x = _digit_like(400)
    out = augment_batch(x, 0.5, torch.Generator().manual_seed(0))
    changed = (out != x).any(1).float().mean()
    assert 0.4 < float(changed) < 0.6
    assert augment_batch(x, 0.0, torch.Generator()) is x


def test_kl_warm_up_is_linear_then_flat() -> None:
    recipe = Recipe(epochs=10, batch_size=8, lr=1e-3, beta=1.0, kl_warmup_epochs=4)
    assert [recipe.kl_weight(e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert Recipe(epochs=1, batch_size=8, lr=1e-3, beta=2.0).kl_weight(0) == 2.0


def test_adversary_gradient_is_reversed_on_the_encoder() -> None:
    torch.manual_seed(0)
    model = CVAE(preset("tiny"))
    adversary = make_adversary(model.config.latent_dim)
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    grads = {}
    for weight in (0.0, 1.0):
        model.zero_grad(), adversary.zero_grad()
        torch.manual_seed(1)
        loss, _, _ = _batch_loss(model, adversary, x, y, kl_weight=1.0, adversary_weight=weight)
        loss.backward()
        grads[weight] = model.fc_mu.weight.grad.clone()
    torch.manual_seed(1)
    model.zero_grad(), adversary.zero_grad()
    elbo_only, _, _ = _batch_loss(model, None, x, y, kl_weight=1.0, adversary_weight=0.0)
    elbo_only.backward()
    # weight 0 leaves the encoder's gradient to the ELBO alone; weight 1 adds the reversed adversary's
    assert torch.allclose(grads[0.0], model.fc_mu.weight.grad, atol=1e-6)
    assert not torch.allclose(grads[1.0], grads[0.0])


def test_preset_recipes() -> None:
    assert preset_job().recipe.adversary_weight == JobConfig().recipe.adversary_weight
    reference = preset_job("reference", epochs=3)
    assert (
        reference.recipe.epochs == 3
        and reference.recipe.adversary_weight == 0
        and reference.recipe.augment == 0
    )
    assert set(PRESETS) >= {"default", "reference", "tiny"}
    with pytest.raises(ValueError):
        preset_job("nope")


def test_every_setting_has_one_flag_and_flags_override_the_preset() -> None:
    parser = build_parser()
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in fields(Recipe)} | (JOB_FIELDS - {"recipe"}) <= dests
    args = parser.parse_args(
        ["--preset", "tiny", "--epochs", "7", "--no-cosine-lr", "--no-eval", "--lr", "0.01"]
    )
    config = config_from_args(args)
    assert config.preset == "tiny" and config.recipe.epochs == 7 and config.recipe.lr == 0.01
    assert config.recipe.cosine_lr is False and config.evaluate is False
    assert (
        config.recipe.adversary_weight == PRESETS["tiny"].recipe.adversary_weight
    )  # untouched: the preset's


def test_the_recorded_settings_rebuild_the_same_config(tmp_path) -> None:
    config = preset_job("mnist", epochs=3, seed=5)
    (tmp_path / "run.json").write_text(json.dumps(config.to_dict()))
    assert preset_job(**load_config_file(tmp_path / "run.json")) == config
    assert config.data == "mnist" and config.recipe.epochs == 3


def test_every_preset_recipe_and_the_default_are_valid() -> None:
    for chosen in PRESETS.values():
        assert Recipe(**{f.name: getattr(chosen.recipe, f.name) for f in fields(Recipe)}) == chosen.recipe
    assert Recipe() == PRESETS["default"].recipe
    Recipe(lr=1, beta=0, kl_warmup_epochs=0, adversary_weight=0, augment=1, epochs=1, patience=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"batch_size": -5}, "batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be finite and > 0"),
        ({"lr": -1e-3}, "lr must be finite and > 0"),
        ({"lr": float("inf")}, "lr must be finite and > 0"),
        ({"lr": float("nan")}, "lr must be finite and > 0"),
        ({"beta": -0.5}, "beta must be >= 0"),
        ({"beta": float("nan")}, "beta must be >= 0"),
        ({"kl_warmup_epochs": -1}, "kl_warmup_epochs must be >= 0"),
        ({"adversary_weight": -1.0}, "adversary_weight must be >= 0"),
        ({"augment": -0.1}, "augment must be from 0 to 1"),
        ({"augment": 1.5}, "augment must be from 0 to 1"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"epochs": 2.0}, "epochs must be an integer, got 2.0"),
        ({"batch_size": True}, "batch_size must be an integer, got True"),
        ({"lr": "0.01"}, "lr must be a number, got '0.01'"),
        ({"augment": False}, "augment must be a number, got False"),
        ({"cosine_lr": 1}, "cosine_lr must be true or false, got 1"),
        ({"cosine_lr": "no"}, "cosine_lr must be true or false"),
    ],
)
def test_nonsense_recipes_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Recipe(**change)
    with pytest.raises(ValueError, match=re.escape(message)):  # overrides of a preset too
        preset_job("tiny", **change)


def _no_training(config: JobConfig) -> None:
    raise AssertionError("bad settings must be refused before training starts")


def test_the_cli_refuses_a_bad_flag_with_a_message_and_code_2(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cli, "run", _no_training)
    assert cli.main(["--batch-size", "0", "--registry", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: batch_size must be >= 1, got 0\n" and captured.out == ""
    assert not (tmp_path / "r").exists()


def test_the_cli_refuses_a_wrongly_typed_config_file_value(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cli, "run", _no_training)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"preset": "tiny", "batch_size": "64"}))
    assert cli.main(["--config", str(config), "--registry", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "error: batch_size must be an integer, got '64'\n"
    config.write_text(json.dumps({"preset": "tiny", "lr": 0}))
    assert cli.main(["--config", str(config), "--registry", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "error: lr must be finite and > 0, got 0\n"
