"""Settings: CVAE_ environment variables, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("CVAE_")]:
        monkeypatch.delenv(name)


def test_defaults_match_the_documented_contract() -> None:
    s = Settings()
    assert (s.registry, s.host, s.port, s.workers, s.device) == (
        Path("registry"),
        "127.0.0.1",
        8000,
        "auto",
        "auto",
    )
    assert (s.max_body_bytes, s.max_image_pixels) == (5_000_000, 16_000_000)
    assert s.admin_token is None and s.cors_origins == [] and s.log_json is True


def test_environment_with_the_prefix_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAE_PORT", "9123")
    monkeypatch.setenv("CVAE_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CVAE_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("CVAE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("CVAE_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert s.port == 9123 and s.max_batch_size == 8 and s.log_level == "debug"
    assert s.admin_token is not None and s.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.cors_origins == ["http://a.example", "http://b.example"]


def test_cors_origins_also_accept_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAE_CORS_ORIGINS", '["http://a.example"]')
    assert Settings().cors_origins == ["http://a.example"]


def test_an_empty_admin_token_means_admin_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAE_ADMIN_TOKEN", "")
    assert Settings().admin_token is None


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "CPU"])
def test_valid_devices(device: str) -> None:
    assert Settings(device=device).device == device.lower()


@pytest.mark.parametrize(
    "field,value",
    [
        ("device", "tpu"),
        ("port", 70000),
        ("workers", 0),
        ("max_batch_size", 0),
        ("default_temperature", 2.5),
        ("log_level", "loud"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_threads_split_the_cores_between_workers() -> None:
    assert Settings(torch_threads=3).intra_op_threads() == 3
    assert Settings(workers=64).intra_op_threads() == 1


def test_get_settings_is_one_instance() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_fleet_settings_have_their_defaults_and_bounds() -> None:
    settings = Settings()
    assert settings.registry_poll_s == 2.0 and settings.model_version is None and settings.drain_delay_s == 0
    assert Settings(model_version=" v0007 ").model_version == "v0007"
    assert Settings(model_version="").model_version is None  # an empty env var means "not pinned"
    for bad in (
        {"model_version": "latest"},
        {"model_version": "../v0001"},
        {"model_version": "v" + "1" * 13},  # longer than any registry version name
        {"model_version": "v\u0661\u0662\u0663\u0664"},  # Arabic-Indic digits: not a version name
        {"registry_poll_s": -1},
        {"drain_delay_s": -0.5},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)
