"""The ELBO and its terms, in nats per example, plus an importance-weighted -log p(x|y)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.network import CVAE


@dataclass(frozen=True)
class ElboTerms:
    """Per-example terms (B,): recon = BCE summed over pixels, kl = KL(q(z|x,y) || N(0, I))."""

    recon: torch.Tensor
    kl: torch.Tensor

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl


def recon_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood summed over pixels, from logits (stable): (B,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)


def kl_to_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, sigma^2) || N(0, I)) per example (Kingma & Welling 2014, appendix B):
    -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2)."""
    return -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=1)


def terms_from(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> ElboTerms:
    """ELBO terms from decoder logits and the posterior's parameters."""
    return ElboTerms(recon=recon_bce(logits, x), kl=kl_to_standard_normal(mu, log_var))


def elbo_terms(model: CVAE, x: torch.Tensor, y: torch.Tensor, sample: bool = True) -> ElboTerms:
    """Reconstruction and KL terms; `sample=False` decodes z = mu (the service's point estimate)."""
    mu, log_var = model.encode(x, y)
    z = model.reparameterize(mu, log_var) if sample else mu
    return terms_from(model.decode_logits(z, y), x, mu, log_var)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(log_var))) summed over the last dimension."""
    return -0.5 * torch.sum(math.log(2 * math.pi) + log_var + (z - mu).pow(2) / log_var.exp(), dim=-1)


@torch.no_grad()
def importance_weighted_nll(model: CVAE, x: torch.Tensor, y: torch.Tensor, k: int = 100) -> torch.Tensor:
    """-log p(x|y) estimated with k importance samples from q (Burda et al. 2016): (B,) nats.

    log p(x|y) ~= logsumexp_i [log p(x|z_i,y) + log p(z_i) - log q(z_i|x,y)] - log k.
    """
    mu, log_var = model.encode(x, y)
    batch, latent = mu.shape
    eps = torch.randn(k, batch, latent, device=x.device, dtype=x.dtype)
    z = mu + torch.exp(0.5 * log_var) * eps  # (k, B, L)
    logits = model.decode_logits(z.reshape(k * batch, latent), y.repeat(k))
    log_px = -recon_bce(logits, x.repeat(k, 1)).reshape(k, batch)
    log_pz = _log_normal(z, torch.zeros_like(mu), torch.zeros_like(log_var))
    log_qz = _log_normal(z, mu, log_var)
    log_w = log_px + log_pz - log_qz
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))


@torch.no_grad()
def label_elbos(model: CVAE, x: torch.Tensor) -> torch.Tensor:
    """The ELBO at z = mu of each image under every label: (B, num_classes) nats.

    Its argmax is the CVAE's own label inference, the rule the service's /encode applies when no
    label is given (a point estimate: z = mu, as in the service)."""
    classes = model.config.num_classes
    labels = torch.arange(classes, device=x.device).repeat(len(x))  # (B * C,): 0..C-1 per image
    rows = x.repeat_interleave(classes, dim=0)  # (B * C, 784)
    return -elbo_terms(model, rows, labels, sample=False).neg_elbo.view(len(x), classes)


def infer_labels(model: CVAE, x: torch.Tensor) -> torch.Tensor:
    """The label whose ELBO is highest, per image: (B,)."""
    return label_elbos(model, x).argmax(dim=1)
