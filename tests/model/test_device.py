"""The one device resolver shared by the trainer and the service."""

import pytest
import torch

from model.device import resolve_device
from model.errors import DeviceError, ModelError


def test_auto_takes_an_accelerator_when_there_is_one_else_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else None
    device = resolve_device("auto")
    if expected:
        assert device.type == expected
    else:
        assert device.type in ("cpu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_accelerator_or_unknown_name_is_a_device_error() -> None:
    for setting in ("cuda", "cuda:1", "gpu0"):
        with pytest.raises(DeviceError) as error:
            resolve_device(setting)
        assert isinstance(error.value, RuntimeError) and isinstance(error.value, ModelError)
