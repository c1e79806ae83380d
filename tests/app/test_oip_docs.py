"""docs/oip.md's tritonclient examples, run as written (in order, one namespace) against the real server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "oip.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_examples_run_and_print_what_they_say(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)  # the examples write 42.png
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(block.replace("localhost:8000", server.removeprefix("http://")), namespace)  # noqa: S102
    out = printed.getvalue()
    assert out.startswith("True True True\n")
    assert "400 input 'labels' must be INT64, got datatype FP32" in out
    assert namespace["year"].shape == (28, 112) and namespace["pixels"].shape == (64, 28, 28)
    assert (tmp_path / "42.png").read_bytes().startswith(b"\x89PNG")
