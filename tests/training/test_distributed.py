"""Distributed training for real: `torchrun --standalone --nproc-per-node=2 -m training` on CPU (gloo),
rank 0 publishing one version that loads, and the same seed and world size giving the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.processes import free_port
from model.registry import Registry
from training.distributed import EpochOrder, World
from training.idx import write_idx

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _tiny_data(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    directory.mkdir()
    write_idx(directory / "train-images-idx3-ubyte", rng.integers(0, 256, (400, 28, 28), dtype=np.uint8))
    write_idx(directory / "train-labels-idx1-ubyte", rng.integers(0, 10, 400, dtype=np.uint8))
    return directory


def _torchrun(registry: Path, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", "-m", "training", "--preset", "tiny"]
    command += ["--data", str(data), "--registry", str(registry), "--epochs", "2", "--batch-size", "32"]
    command += ["--no-eval", "--no-progress", "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_cpu_processes_train_one_loadable_version_reproducibly(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    first = _torchrun(tmp_path / "a", data)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("version v0001 written") == 1  # rank 0 alone publishes and prints
    registry = Registry(tmp_path / "a")
    assert registry.version_names() == ["v0001"] and registry.active_version() == "v0001"
    checkpoint = registry.load()
    assert checkpoint.metadata["environment"]["world_size"] == 2
    assert checkpoint.metadata["training"]["batch_size"] == 32  # per process: 64 per step in all
    assert not list((tmp_path / "a").glob(".staging-*"))
    second = _torchrun(tmp_path / "b", data)
    assert second.returncode == 0, second.stderr[-3000:]
    assert Registry(tmp_path / "b").load().metadata["weights_sha256"] == checkpoint.metadata["weights_sha256"]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_a_failing_distributed_run_exits_cleanly_on_every_rank(tmp_path: Path) -> None:
    failed = _torchrun(tmp_path / "r", tmp_path / "missing")
    assert failed.returncode != 0
    # each rank reports the bad input on one line and exits 2 (torchrun then reports the failed
    # children itself); no rank dies with a traceback or hangs in the process group
    assert failed.stderr.count("error: data directory") == 2
    assert "exitcode  : 2" in failed.stderr and "training/" not in failed.stderr
    assert Registry(tmp_path / "r").version_names() == []


def test_each_rank_gets_its_own_equal_shard_of_every_epoch() -> None:
    import torch

    orders = [EpochOrder(10, World(rank, 2), seed=0, generator=torch.Generator()) for rank in (0, 1)]
    for epoch in (0, 1):
        shards = [order(epoch) for order in orders]
        assert len(shards[0]) == len(shards[1]) == 5
        assert sorted(torch.cat(shards).tolist()) == list(range(10))
    assert not torch.equal(orders[0](0), orders[0](1))  # set_epoch reshuffles


NODE_FIRST = """
import json, sys, time
import torch
from training.distributed import node_first, process_group, world_from_env

world, log, fail = world_from_env(), sys.argv[1], sys.argv[2] == "fail"
with process_group(world, torch.device("cpu")):
    try:
        with node_first(world):
            began = time.time()
            if world.local_rank == 0:
                time.sleep(0.5)  # a download
                if fail:
                    raise OSError("no network")
            outcome = "done"
    except OSError:
        outcome = "failed"
    with open(log, "a") as f:
        f.write(json.dumps([world.rank, began, time.time(), outcome]) + "\\n")
"""


@pytest.mark.parametrize("fail", [False, True])
def test_a_node_s_first_process_loads_the_data_before_the_others(tmp_path: Path, fail: bool) -> None:
    """Under torchrun the full MNIST is fetched by one process per node; the others wait for it (and
    go on, to read the cache or fail the same way, when it failed) instead of all fetching at once."""
    log = tmp_path / "log.jsonl"
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NODE_FIRST, str(log), "fail" if fail else "ok"],
            cwd=REPO,
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for rank in (0, 1)
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    rows = {rank: (began, ended, outcome) for rank, began, ended, outcome in map(json.loads, log.open())}
    assert rows[0][2] == ("failed" if fail else "done") and rows[1][2] == "done"
    assert rows[1][0] >= rows[0][1] - 0.01  # rank 1 began its block once rank 0 had left it
    assert rows[0][1] - rows[0][0] >= 0.5  # ... after the half-second "download"
