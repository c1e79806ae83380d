"""Evaluation figures: the choice of the default temperature and the judge-based accuracies."""

import torch

from model.network import CVAE
from training.evaluate import choose_temperature, conditional_accuracy, cross_style_accuracy
from training.presets import preset


def _result(overall: float, worst: float) -> dict:
    return {"overall": overall, "per_class": [worst] + [overall] * 9}


def test_the_highest_temperature_meeting_both_targets_is_chosen() -> None:
    results = {
        1.0: _result(0.96, 0.90),
        0.9: _result(0.975, 0.92),
        0.8: _result(0.985, 0.95),
        0.7: _result(0.99, 0.97),
    }
    assert choose_temperature(results) == 0.8


def test_without_a_temperature_meeting_the_targets_the_most_legible_wins() -> None:
    assert choose_temperature({1.0: _result(0.5, 0.1), 0.5: _result(0.8, 0.2)}) == 0.5


class _ReadsBrightness(torch.nn.Module):
    """A fake judge: reads the digit from the mean pixel value, as this fake decoder writes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        digit = (x.mean(1) * 10).clamp(0, 9.999).floor().long()
        return torch.nn.functional.one_hot(digit, 10).float()


class _WritesTheLabel(CVAE):
    """A fake decoder whose output encodes y only (ignores z): perfect conditional and cross-style."""

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((y.float() + 0.5) / 10)[:, None].expand(-1, 784)


class _WritesTheStyle(_WritesTheLabel):
    """A fake decoder that writes whatever class z says, ignoring y."""

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((z[:, 0].clamp(0, 9).round() + 0.5) / 10)[:, None].expand(-1, 784)

    def encode(self, x, y):
        mu = torch.zeros(len(y), self.config.latent_dim)
        mu[:, 0] = y.float()
        return mu, torch.zeros_like(mu)


def test_accuracies_see_a_decoder_that_follows_the_label() -> None:
    model, judge = _WritesTheLabel(preset("tiny")), _ReadsBrightness()
    result = conditional_accuracy(model, judge, per_class=5, temperature=1.0, seed=0)
    assert result["overall"] == 1.0 and result["per_class"] == [1.0] * 10
    x, y = torch.rand(30, 784), torch.arange(30) % 10
    assert cross_style_accuracy(model, judge, x, y)["overall"] == 1.0


def test_cross_style_sees_a_latent_that_carries_the_class() -> None:
    model, judge = _WritesTheStyle(preset("tiny")), _ReadsBrightness()
    x, y = torch.rand(30, 784), torch.arange(30) % 10
    assert cross_style_accuracy(model, judge, x, y)["overall"] == 0.0
