"""The ELBO terms against independent computations (Monte Carlo KL, elementwise BCE)."""

import math

import torch

from model.loss import elbo_terms, importance_weighted_nll, kl_to_standard_normal, recon_bce
from model.network import CVAE
from training.presets import preset


def test_analytic_kl_matches_monte_carlo() -> None:
    torch.manual_seed(0)
    mu, log_var = torch.randn(4, 6) * 0.7, torch.randn(4, 6) * 0.5
    sigma = torch.exp(0.5 * log_var)
    z = mu + sigma * torch.randn(200_000, 4, 6)
    log_q = torch.distributions.Normal(mu, sigma).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    monte_carlo = (log_q - log_p).mean(0)
    assert torch.allclose(kl_to_standard_normal(mu, log_var), monte_carlo, atol=0.03)


def test_kl_is_zero_at_the_prior() -> None:
    assert torch.allclose(kl_to_standard_normal(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))


def test_recon_bce_is_the_summed_bernoulli_nll() -> None:
    logits, x = torch.randn(3, 784), torch.rand(3, 784)
    p = torch.sigmoid(logits)
    manual = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)
    assert torch.allclose(recon_bce(logits, x), manual, rtol=1e-4)


def test_elbo_terms_point_estimate_and_sum() -> None:
    torch.manual_seed(0)
    model = CVAE(preset("tiny")).eval()
    x, y = torch.rand(4, 784), torch.tensor([0, 1, 2, 3])
    terms = elbo_terms(model, x, y, sample=False)
    mu, log_var = model.encode(x, y)
    assert torch.allclose(terms.recon, recon_bce(model.decode_logits(mu, y), x))
    assert torch.allclose(terms.neg_elbo, terms.recon + terms.kl)


def test_importance_weighted_bound_is_tighter_than_the_elbo() -> None:
    torch.manual_seed(0)
    model = CVAE(preset("tiny")).eval()
    x, y = (torch.rand(8, 784) > 0.7).float(), torch.arange(8)
    with torch.no_grad():
        neg_elbo = torch.stack([elbo_terms(model, x, y).neg_elbo for _ in range(200)]).mean(0)
    torch.manual_seed(1)
    one = importance_weighted_nll(model, x, y, k=1)
    many = importance_weighted_nll(model, x, y, k=500)
    assert torch.all(many <= neg_elbo + 1e-3)
    assert float(many.mean()) < float(one.mean())
    assert math.isfinite(float(many.sum()))
