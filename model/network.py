"""The CVAE network: encoder q(z|x,y) and decoder p(x|z,y), both MLPs conditioned on one-hot y.

Vocabulary follows the VAE paper (Kingma & Welling, 2014): encode -> (mu, log_var),
reparameterize -> z, decode -> Bernoulli logits. The module does no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import IMAGE_SIDE, CVAEConfig

# The conv paths halve the side twice: 28 -> 14 -> 7.
CONV_SIDE = IMAGE_SIDE // 4


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


class _ConvHead(nn.Module):
    """(B, width) features -> (B, 784) logits: a linear map to (c0, 7, 7), two stride-2 transposed
    convolutions to (1, IMAGE_SIDE, IMAGE_SIDE); the one-hot label adds a learned per-channel bias to
    each map."""

    def __init__(self, width: int, cond_dim: int, channels: tuple[int, ...]):
        super().__init__()
        c0, c1 = channels
        self.c0 = c0
        self.fc = nn.Linear(width, c0 * CONV_SIDE * CONV_SIDE)
        self.up1 = nn.ConvTranspose2d(c0, c1, kernel_size=4, stride=2, padding=1)  # 7 -> 14
        self.up2 = nn.ConvTranspose2d(c1, 1, kernel_size=4, stride=2, padding=1)  # 14 -> 28
        self.cond0 = nn.Linear(cond_dim, c0, bias=False)
        self.cond1 = nn.Linear(cond_dim, c1, bias=False)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        m = self.fc(h).view(-1, self.c0, CONV_SIDE, CONV_SIDE) + self.cond0(cond)[:, :, None, None]
        m = F.relu(self.up1(F.relu(m)) + self.cond1(cond)[:, :, None, None])  # (B, c1, 14, 14)
        return self.up2(m).flatten(1)  # (B, 784)


class _ConvFeatures(nn.Module):
    """(B, 784) image -> (B, c0 * 7 * 7) features: two stride-2 convolutions with ReLU."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        c0, c1 = channels
        self.down1 = nn.Conv2d(1, c1, kernel_size=4, stride=2, padding=1)  # 28 -> 14
        self.down2 = nn.Conv2d(c1, c0, kernel_size=4, stride=2, padding=1)  # 14 -> 7
        self.out_dim = c0 * CONV_SIDE * CONV_SIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down1(x.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)))  # (B, c1, 14, 14)
        return F.relu(self.down2(h)).flatten(1)  # (B, c0 * 49)


class CVAE(nn.Module):
    """Conditional VAE over 28x28 images in [0, 1] and digit labels 0-9."""

    def __init__(self, config: CVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.features: nn.Module = nn.Identity()
        feature_dim = c.image_pixels
        if c.encoder == "conv":
            conv = _ConvFeatures(c.conv_channels)
            self.features, feature_dim = conv, conv.out_dim
        self.encoder = _ConditionedMLP(feature_dim, c.num_classes, c.encoder_hidden, False)
        self.fc_mu = nn.Linear(self.encoder.out_dim, c.latent_dim)
        self.fc_log_var = nn.Linear(self.encoder.out_dim, c.latent_dim)
        self.decoder = _ConditionedMLP(c.latent_dim, c.num_classes, c.decoder_hidden, c.label_every_layer)
        self.head: nn.Module
        if c.decoder == "conv":
            self.head = _ConvHead(self.decoder.out_dim, c.num_classes, c.conv_channels)
        else:
            self.head = nn.Linear(self.decoder.out_dim, c.image_pixels)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 784) in [0, 1], y (B,) labels -> mu, log_var, each (B, latent_dim)."""
        h = self.encoder(self.features(x), one_hot(y, self.config.num_classes))
        return self.fc_mu(h), self.fc_log_var(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): differentiable sampling."""
        return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim), y (B,) -> Bernoulli logits (B, 784)."""
        cond = one_hot(y, self.config.num_classes)
        h = self.decoder(z, cond)
        return self.head(h, cond) if isinstance(self.head, _ConvHead) else self.head(h)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder mean: pixel probabilities (B, 784) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the reconstruction, mu, log_var; z is sampled in training and = mu in eval."""
        mu, log_var = self.encode(x, y)
        z = self.reparameterize(mu, log_var) if self.training else mu
        return self.decode_logits(z, y), mu, log_var
