"""The CVAE network: encoder q(z|x,y) and decoder p(x|z,y), both MLPs conditioned on one-hot y.

Vocabulary follows the VAE paper (Kingma & Welling, 2014): encode -> (mu, log_var),
reparameterize -> z, decode -> Bernoulli logits. The module does no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import CVAEConfig


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float one-hot rows for integer labels."""
    return F.one_hot(labels.long(), num_classes).float()


class _ConditionedMLP(nn.Module):
    """Linear+ReLU stack whose layers see the condition: the first always, the others optionally."""

    def __init__(self, in_dim: int, cond_dim: int, hidden: tuple[int, ...], every_layer: bool):
        super().__init__()
        self.every_layer = every_layer
        layers = []
        width = in_dim
        for i, out in enumerate(hidden):
            extra = cond_dim if (i == 0 or every_layer) else 0
            layers.append(nn.Linear(width + extra, out))
            width = out
        self.layers = nn.ModuleList(layers)
        self.out_dim = width

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i == 0 or self.every_layer:
                h = torch.cat([h, cond], dim=1)
            h = F.relu(layer(h))
        return h


class CVAE(nn.Module):
    """Conditional VAE over 28x28 images in [0, 1] and digit labels 0-9."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = _ConditionedMLP(c.image_pixels, c.num_classes, c.encoder_hidden, False)
        self.fc_mu = nn.Linear(self.encoder.out_dim, c.latent_dim)
        self.fc_log_var = nn.Linear(self.encoder.out_dim, c.latent_dim)
        self.decoder = _ConditionedMLP(
            c.latent_dim, c.num_classes, c.decoder_hidden, c.label_every_layer
        )
        self.fc_out = nn.Linear(self.decoder.out_dim, c.image_pixels)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 784) in [0, 1], y (B,) labels -> mu, log_var, each (B, latent_dim)."""
        h = self.encoder(x, one_hot(y, self.config.num_classes))
        return self.fc_mu(h), self.fc_log_var(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): differentiable sampling."""
        return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim), y (B,) -> Bernoulli logits (B, 784)."""
        h = self.decoder(z, one_hot(y, self.config.num_classes))
        return self.fc_out(h)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder mean: pixel probabilities (B, 784) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the reconstruction, mu, log_var; z is sampled in training and = mu in eval."""
        mu, log_var = self.encode(x, y)
        z = self.reparameterize(mu, log_var) if self.training else mu
        return self.decode_logits(z, y), mu, log_var
