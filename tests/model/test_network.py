"""Shapes and modes of the CVAE network, and its config round trip."""

import pytest
import torch

from model.config import CVAEConfig
from model.errors import CheckpointError
from model.network import CVAE
from training.presets import preset


@pytest.mark.parametrize("name", ["reference", "default", "tiny"])
def test_shapes_for_every_preset(name: str) -> None:
    model = CVAE(preset(name))
    x, y = torch.rand(5, 784), torch.tensor([0, 1, 2, 3, 9])
    logits, mu, log_var = model(x, y)
    latent = model.config.latent_dim
    assert logits.shape == (5, 784)
    assert mu.shape == log_var.shape == (5, latent)
    with torch.no_grad():
        probs = model.decode(torch.randn(5, latent), y)
    assert probs.shape == (5, 784) and float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_reference_preset_is_the_article_design() -> None:
    config = preset("reference")
    assert config.encoder_hidden == (512, 512) and config.decoder_hidden == (512, 512)
    assert config.latent_dim == 256
    model = CVAE(config)
    assert model.encoder.layers[0].in_features == 784 + 10
    assert model.decoder.layers[0].in_features == 256 + 10


def test_eval_mode_uses_the_mean_and_training_mode_samples() -> None:
    torch.manual_seed(0)
    model = CVAE(preset("tiny"))
    x, y = torch.rand(3, 784), torch.tensor([1, 2, 3])
    model.eval()
    first, _, _ = model(x, y)
    second, _, _ = model(x, y)
    assert torch.equal(first, second)
    model.train()
    third, _, _ = model(x, y)
    assert not torch.equal(first, third)


def test_label_changes_the_decoder_output() -> None:
    model = CVAE(preset("default")).eval()
    z = torch.randn(1, model.config.latent_dim)
    assert not torch.allclose(model.decode(z, torch.tensor([3])), model.decode(z, torch.tensor([7])))


def test_config_round_trip_and_bad_configs() -> None:
    config = preset("default", latent_dim=12)
    assert CVAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(CheckpointError):
        CVAEConfig.from_dict({**config.to_dict(), "new_field": 1})
    with pytest.raises(CheckpointError):
        CVAEConfig.from_dict({**config.to_dict(), "latent_dim": 0})
    with pytest.raises(ValueError):
        preset("nope")


@pytest.mark.parametrize(("encoder", "decoder"), [("conv", "mlp"), ("mlp", "conv"), ("conv", "conv")])
def test_conv_encoder_and_decoder_options(encoder: str, decoder: str) -> None:
    config = CVAEConfig(latent_dim=8, encoder=encoder, decoder=decoder, conv_channels=(16, 8))
    model = CVAE(config)
    logits, mu, _ = model(torch.rand(3, 784), torch.tensor([0, 4, 9]))
    assert logits.shape == (3, 784) and mu.shape == (3, 8)
    assert CVAEConfig.from_dict(config.to_dict()) == config


def test_unknown_encoder_or_decoder_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'mlp' or 'conv'"):
        CVAEConfig(decoder="transformer")
