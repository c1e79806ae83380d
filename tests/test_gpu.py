"""The CUDA path: the network, checkpoints, a training run and the service on a GPU.

Skipped without CUDA (CI has none); run them on a GPU machine with `python -m pytest tests/test_gpu.py`.
"""

from pathlib import Path

import httpx
import pytest
import torch

from loadtest.server import start_server
from model.checkpoint import load_checkpoint
from model.network import CVAE
from model.registry import Registry
from tests.builders.models import train_tiny
from training.presets import preset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_network_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = CVAE(preset("default")).eval()
    x, y = torch.rand(8, 784), torch.arange(8)
    with torch.no_grad():
        expected = model(x, y)[0]
        actual = model.cuda()(x.cuda(), y.cuda())[0].cpu()
    assert torch.allclose(actual, expected, atol=1e-3)


def test_training_on_cuda_writes_a_version_that_loads_on_both_devices(tmp_path: Path) -> None:
    result = train_tiny(tmp_path, epochs=2, device="cuda")
    assert result.metadata["training"]["device"] == "cuda"
    on_gpu = load_checkpoint(result.path, device="cuda")
    assert next(on_gpu.model.parameters()).is_cuda
    on_cpu = Registry(tmp_path).load(device="cpu")
    assert not next(on_cpu.model.parameters()).is_cuda


def test_service_serves_from_the_gpu(trained_registry: Path) -> None:
    with start_server(trained_registry, device="cuda") as server:
        url = server.base_url
        models = httpx.get(f"{url}/v1/models").json()
        answer = httpx.post(f"{url}/generate", json={"text": "2026", "seed": 1})
        metrics = httpx.get(f"{url}/metrics").text
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert "cuda" in str(models) or 'device="cuda' in metrics
