"""The inference object: planning rows, painting tiles, batch-invariant results, label inference."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from app.batching import Batcher
from app.engine import ROWS_PER_TILE, SHORT_TILES, Engine, LeanDecoder, matching_tiles, tile_bounds
from app.exceptions import InvalidInput
from app.inference import Inference, paint, plan_generation
from app.model_pool import ModelPool
from model.config import CVAEConfig
from model.loss import elbo_terms
from model.network import CVAE
from model.registry import Registry


def test_one_z_per_row_shared_by_every_digit_and_spaces_are_skipped() -> None:
    plan = plan_generation("4 2", samples=3, seed=7, temperature=1.0, style=None, latent_dim=4)
    assert plan.shape == (3, 3) and plan.cells == [(r, c) for r in range(3) for c in (0, 2)]
    assert plan.y.tolist() == [4, 2] * 3
    assert torch.equal(plan.z[0], plan.z[1]) and not torch.equal(plan.z[0], plan.z[2])
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(plan.z[::2], eps)  # row r uses the seed's r-th draw, whatever else is batched


def test_the_seed_fixes_the_noise_and_temperature_scales_it() -> None:
    a = plan_generation("1", 2, seed=1, temperature=1.0, style=None, latent_dim=4)
    b = plan_generation("1", 2, seed=1, temperature=0.5, style=None, latent_dim=4)
    c = plan_generation("1", 2, seed=2, temperature=1.0, style=None, latent_dim=4)
    assert torch.allclose(b.z, 0.5 * a.z) and not torch.equal(a.z, c.z)
    zero = plan_generation("1", 2, seed=1, temperature=0.0, style=None, latent_dim=4)
    assert torch.count_nonzero(zero.z) == 0  # temperature 0 = the mean style


def test_style_is_used_for_every_tile() -> None:
    plan = plan_generation("12", 2, seed=1, temperature=1.0, style=[0.5, -1, 2, 0], latent_dim=4)
    assert torch.equal(plan.z, torch.tensor([[0.5, -1, 2, 0]]).expand(4, 4))


@pytest.mark.parametrize(
    "style,match", [([0.0] * 3, "exactly 4 values"), ([0, 0, 0, float("nan")], "finite")]
)
def test_a_bad_style_is_invalid_input(style: list[float], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        plan_generation("1", 1, seed=1, temperature=1.0, style=style, latent_dim=4)


def test_paint_places_tiles_and_leaves_spaces_black() -> None:
    plan = plan_generation("1 1", 2, seed=1, temperature=1.0, style=None, latent_dim=4)
    probs = torch.arange(4, dtype=torch.float32).repeat_interleave(784).reshape(4, 784) / 4
    image = paint(plan, probs)
    assert image.shape == (56, 84) and image.dtype == np.float32
    assert image[0:28, 28:56].max() == 0 and image[28:56, 56:84].min() == 0.75


@pytest.fixture
def engine(random_registry: Registry) -> Engine:
    engine = Engine("v0001", random_registry.load("v0001"), torch.device("cpu"))
    engine.warm_up()  # as the pool does: it also proves which short last tiles are exact here
    return engine


def test_a_row_is_identical_whatever_batch_it_shares(engine: Engine) -> None:
    z, y = torch.randn(1, 4), torch.tensor([3])
    (alone,) = engine.run("decode", z, y)
    for n in (2, 3, 17, 64, 300):
        others = torch.randn(n, 4)
        others[n // 2] = z[0]
        labels = torch.randint(0, 10, (n,))
        labels[n // 2] = 3
        (batch,) = engine.run("decode", others, labels)
        assert batch.shape == (n, 784)
        assert torch.equal(batch[n // 2], alone[0])  # bit for bit: fixed-shape tiles


@pytest.mark.parametrize("kind", ["decode", "encode"])
def test_every_row_of_any_batch_has_the_bits_of_a_full_tile(engine: Engine, kind: str) -> None:
    """Whatever the batch size (short last tiles included), a row's outputs are those of its row in a
    full ROWS_PER_TILE-row pass of the model."""
    width = engine.latent_dim if kind == "decode" else 784
    x = torch.randn(48, width) if kind == "decode" else torch.rand(48, width)
    y = torch.randint(0, 10, (48,))
    step = engine.decode_rows if kind == "decode" else engine.encode_rows
    tiles = [step(x[i : i + ROWS_PER_TILE], y[i : i + ROWS_PER_TILE]) for i in (0, 16, 32)]
    full = [torch.cat(parts) for parts in zip(*tiles, strict=True)]
    for rows in range(1, 41):
        start = 48 - rows if rows % 3 else 0  # the rows of full tiles at different offsets
        outputs = engine.run(kind, x[start : start + rows], y[start : start + rows])
        for got, want in zip(outputs, full, strict=True):
            assert torch.equal(got, want[start : start + rows]), (kind, rows)


@pytest.mark.parametrize("every_layer", [True, False])
def test_the_lean_decoder_gives_the_model_s_bits(every_layer: bool) -> None:
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(latent_dim=8, decoder_hidden=(64, 32), label_every_layer=every_layer)).eval()
    lean = LeanDecoder.of(model)
    assert lean is not None
    generator = torch.Generator().manual_seed(1)
    assert lean.agrees(model, lambda: torch.randn(ROWS_PER_TILE, 8, generator=generator), generator)
    z, y = torch.randn(40, 8), torch.randint(0, 10, (40,))
    with torch.inference_mode():
        for rows in (1, 2, 4, 16, 40):
            assert torch.equal(lean(z[:rows], y[:rows]), model.decode(z[:rows], y[:rows])), rows


def test_the_lean_decoder_is_used_only_where_it_agrees(engine: Engine) -> None:
    assert isinstance(engine._decode, LeanDecoder)  # the MLP decoder of the registry's version
    model = engine.model
    lean = LeanDecoder.of(model)
    assert lean is not None
    lean.head = (lean.head[0], lean.head[1] + 1e-3)  # a decoder that is not the model's
    generator = torch.Generator().manual_seed(0)
    assert not lean.agrees(model, lambda: torch.randn(ROWS_PER_TILE, 4, generator=generator), generator)
    conv = CVAE(CVAEConfig(latent_dim=4, decoder="conv"))
    assert LeanDecoder.of(conv) is None  # another decoder shape: the model's own decode runs


def test_short_tiles_are_kept_only_when_they_give_the_full_tiles_bits() -> None:
    weight = torch.randn(7, 5)

    def exact(x: torch.Tensor) -> tuple[torch.Tensor]:  # row by row: no dependence on the shape
        return (torch.stack([row @ weight for row in x]),)

    def shape_dependent(x: torch.Tensor) -> tuple[torch.Tensor]:  # what BLAS kernels can do
        return (x @ weight + len(x) * 1e-3,)

    probes = [(torch.randn(ROWS_PER_TILE, 7),) for _ in range(2)]
    assert matching_tiles(exact, probes, SHORT_TILES) == SHORT_TILES
    assert matching_tiles(shape_dependent, probes, SHORT_TILES) == ()


def test_tile_bounds_pad_only_the_last_tile_to_the_smallest_verified_size() -> None:
    assert tile_bounds(2, (4, 8)) == [(0, 4)]
    assert tile_bounds(5, (4, 8)) == [(0, 8)]
    assert tile_bounds(9, (4, 8)) == [(0, 16)]  # no verified size holds 9 rows: a full tile
    assert tile_bounds(34, (4, 8)) == [(0, 16), (16, 32), (32, 36)]
    assert tile_bounds(32, (4, 8)) == [(0, 16), (16, 32)]
    assert tile_bounds(3, ()) == [(0, 16)]  # nothing verified: every tile is full


def test_encode_rows_match_the_model_loss(engine: Engine) -> None:
    x, y = torch.rand(3, 784), torch.tensor([1, 2, 3])
    mu, log_var, probs, recon, kl = engine.run("encode", x, y)
    terms = elbo_terms(engine.model, x, y, sample=False)
    assert mu.shape == log_var.shape == (3, 4) and probs.shape == (3, 784)
    assert torch.allclose(recon, terms.recon, rtol=1e-4) and torch.allclose(
        kl, terms.kl, rtol=1e-4, atol=1e-5
    )


def _inference(registry: Registry, **batcher: float) -> Inference:
    pool = ModelPool(registry, torch.device("cpu"), 2)
    params = {"max_batch_size": 64, "max_wait_ms": 5, "max_queue_depth": 64} | batcher
    return Inference(pool, Batcher(**params), default_temperature=None, timeout_s=5)  # type: ignore[arg-type]


def test_generate_is_reproducible_and_batching_does_not_change_it(random_registry: Registry) -> None:
    async def body() -> None:
        inference = _inference(random_registry)
        await inference.pool.sync()  # what the service's start-up does: load the active version
        inference.batcher.start()
        alone = await inference.generate("305", samples=2, seed=11)
        crowd = await asyncio.gather(
            *(inference.generate("9 1", samples=3, seed=s) for s in range(20)),
            inference.generate("305", samples=2, seed=11),
        )
        assert crowd[-1].stats.batch_size > 1
        assert np.array_equal(alone.image, crowd[-1].image)
        assert alone.image.shape == (56, 84) and alone.seed == 11 and alone.version == "v0001"
        assert alone.temperature == 0.5  # the version's own default_temperature
        drawn = await inference.generate("1")
        assert 0 <= drawn.seed < 2**63
        await inference.batcher.stop()

    asyncio.run(body())


def test_label_inference_is_one_pass_over_the_ten_labels(random_registry: Registry) -> None:
    async def body() -> None:
        inference = _inference(random_registry)
        await inference.pool.sync()  # what the service's start-up does: load the active version
        inference.batcher.start()
        pool_engine = await inference.pool.get(None)
        calls = []
        real_run = pool_engine.run
        pool_engine.run = lambda kind, *t: (
            calls.append((kind, t[0].shape[0], t[1].tolist())) or real_run(kind, *t)
        )
        pixels = np.zeros((28, 28), dtype=np.float32)
        pixels[6:22, 12:16] = 1.0
        inferred = await inference.encode(pixels)
        given = await inference.encode(pixels, label=7)
        assert calls == [("encode", 10, list(range(10))), ("encode", 1, [7])]
        assert inferred.label_source == "inferred" and given.label_source == "given"
        assert abs(sum(inferred.label_probs) - 1) < 1e-9 and len(inferred.label_probs) == 10
        assert inferred.label == int(np.argmax(inferred.label_probs))
        assert given.label == 7 and given.label_probs[7] == 1.0
        assert given.elbo == pytest.approx(-(given.recon_bce + given.kl))
        assert len(given.mu) == len(given.log_var) == 4 and given.reconstruction.shape == (28, 28)
        # the chosen label's terms are the ones of the single-label pass
        same = await inference.encode(pixels, label=inferred.label)
        assert same.recon_bce == pytest.approx(inferred.recon_bce, rel=1e-5)
        await inference.batcher.stop()

    asyncio.run(body())
