"""The hot path's shortcuts answer exactly what the plain route answers: the /generate fast path, the
direct PNG writer, the work-based admission of the batcher, the CPU count behind CVAE_WORKERS=auto and
the transport that sends an answer's head and body in one write."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.batching import Batcher, CostModel
from app.connections import _OneWriteTransport
from app.cpus import available_cpus, cgroup_quota
from app.exceptions import InferenceTimeout, Overloaded
from app.imaging import to_png
from app.settings import Settings
from benchmarks.bench_report import Overload, Result, _overload_lines, _verdicts
from benchmarks.hey import Run
from benchmarks.naive_server import build_app
from model.errors import DeviceError
from model.registry import Registry
from tests.builders.rawhttp import connect, read_response, request_head


def test_the_fast_path_and_the_route_give_the_same_png(http: httpx.Client) -> None:
    body = {"text": "4 2", "samples": 2, "seed": 9, "scale": 2, "invert": True}
    fast = http.post("/generate", json=body)  # JSON body, no query: the fast path
    routed = http.post("/generate", params={"format": "png"}, json=body)  # a query: the FastAPI route
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    for header in ("content-type", "x-model-version", "x-seed"):
        assert fast.headers[header] == routed.headers[header]
    assert float(fast.headers["x-inference-ms"]) > 0 and fast.headers["server-timing"].startswith(
        "inference;"
    )


def test_bodies_the_fast_path_does_not_take_get_the_route_s_answer(http: httpx.Client) -> None:
    bad = http.post("/generate", content=b'{"text": "4a"}', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "text"]
    plain = http.post(
        "/generate", content=b'{"text": "7", "seed": 1}', headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 422 and plain.json()["detail"][0]["loc"] == ["body"]  # the route's own answer


def test_encode_refuses_a_format_it_does_not_serve(http: httpx.Client) -> None:
    png = to_png(np.zeros((28, 28), dtype=np.float32))
    response = http.post("/encode", params={"format": "xml"}, files={"file": ("d.png", png, "image/png")})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "format"]


@pytest.mark.parametrize("scale", [1, 2, 8])
@pytest.mark.parametrize("invert", [False, True])
# (28, 56) at scale 1: stored without deflate (small); (448, 140) at scale 8: several blocks
@pytest.mark.parametrize("shape", [(28, 56), (56, 84), (448, 140)])
def test_the_png_writer_matches_pillow_pixel_for_pixel(scale: int, invert: bool, shape: tuple) -> None:
    image = np.random.default_rng(scale).random(shape, dtype=np.float32)
    image[:, :28] = 0  # a blank tile: long runs
    decoded = np.asarray(Image.open(io.BytesIO(to_png(image, scale=scale, invert=invert))))
    grey = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    expected = (255 - grey if invert else grey).repeat(scale, axis=0).repeat(scale, axis=1)
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, expected)


def test_only_tiny_pngs_skip_deflate() -> None:
    blank = np.zeros((28, 56), dtype=np.float32)
    assert len(to_png(blank)) > 28 * 57  # "42" at scale 1: 1.6 KB of scanlines, stored as they are
    assert len(to_png(blank, scale=2)) < 56 * 113 // 20  # 6.3 KB of scanlines: deflated


def test_work_that_cannot_finish_before_its_deadline_is_refused_at_once() -> None:
    class Slow:
        def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            time.sleep(0.05)
            return inputs

    async def body() -> None:
        cost = CostModel(job_s=0.05, row_s=0.0, pixel_s=0.0)  # a job is known to take 50 ms
        batcher = Batcher(64, 0, 1000, cost=cost)
        batcher.start()
        rows = (torch.zeros(1, 1),)
        deadline = time.perf_counter() + 0.5
        jobs = [
            asyncio.ensure_future(batcher.run(Slow(), "decode", rows=1, deadline=deadline, inputs=rows))
            for _ in range(20)
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        refused = [r for r in results if isinstance(r, Overloaded)]
        served = [r for r in results if not isinstance(r, BaseException)]
        assert refused and served and len(refused) + len(served) == 20  # nothing timed out late
        assert all("queue is full" in str(r) for r in refused)
        assert time.perf_counter() <= deadline + 0.05  # the served ones all finished in time
        await batcher.stop()

    asyncio.run(body())


def test_a_large_lane_that_falls_behind_refuses_its_late_jobs_at_once_not_at_their_deadline() -> None:
    class Slower:  # three times as slow as admission estimated (a busy machine), beyond its 2x margin
        def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            time.sleep(0.3)
            return inputs

    async def body() -> None:
        cost = CostModel(job_s=0.0, row_s=0.1 / 512, pixel_s=0.0)  # a 512-row job: 0.1 s, it thinks
        batcher = Batcher(64, 0, 1000, cost=cost)
        batcher.start()
        started = time.perf_counter()
        deadline = started + 1.05
        timed: list[tuple[float, object]] = []

        async def one() -> None:
            job = batcher.run(Slower(), "decode", rows=512, deadline=deadline, inputs=(torch.zeros(512, 1),))
            try:
                result: object = await job
            except InferenceTimeout as exc:
                result = exc
            timed.append((time.perf_counter() - started, result))

        await asyncio.gather(*(one() for _ in range(5)))  # 2 x 5 x 0.1 s = 1.0 s: all admitted
        served = [t for t, r in timed if not isinstance(r, InferenceTimeout)]
        shed = [(t, r) for t, r in timed if isinstance(r, InferenceTimeout)]
        assert len(served) == 3 and max(served) <= 1.05  # every accepted answer within its deadline
        # the first job's pace (0.3 s) showed the last two could not make it: refused right then, not
        # when the job before them finished (0.9 s) nor at their deadline
        assert len(shed) == 2 and all(t < 0.6 and "at the present pace" in str(r) for t, r in shed), shed
        assert batcher.queued_jobs() == 0
        await batcher.stop()

    asyncio.run(body())


def test_a_large_job_does_not_hold_up_small_ones() -> None:
    class Runner:
        def run(self, kind: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            time.sleep(0.3 if inputs[0].shape[0] > 100 else 0.001)
            return inputs

    async def body() -> None:
        batcher = Batcher(64, 0, 1000, cost=CostModel(job_s=1e-4, row_s=1e-3, pixel_s=0.0))
        batcher.start()
        deadline = time.perf_counter() + 5
        large = asyncio.ensure_future(
            batcher.run(Runner(), "decode", rows=512, deadline=deadline, inputs=(torch.zeros(512, 1),))
        )
        await asyncio.sleep(0.02)  # the large one is being computed
        started = time.perf_counter()
        await batcher.run(Runner(), "decode", rows=1, deadline=deadline, inputs=(torch.zeros(1, 1),))
        assert time.perf_counter() - started < 0.2  # not after the 0.3 s large job
        await large
        await batcher.stop()

    asyncio.run(body())


def test_cpus_follow_the_cgroup_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path, proc) == 1.5
    assert available_cpus(tmp_path, proc) == min(2, available_cpus(tmp_path / "none", proc))
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "job").mkdir(parents=True)
    (v1 / "cpu" / "job" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("3:cpu,cpuacct:/job\n")
    assert cgroup_quota(v1, proc) == 1.0 and available_cpus(v1, proc) == 1


def test_auto_workers_are_the_usable_cpus_and_one_on_cuda() -> None:
    assert Settings().workers == "auto"
    assert Settings().worker_count() == available_cpus()
    assert Settings().worker_count(cuda=True) == 1
    assert Settings(workers=3).worker_count(cuda=True) == 3


class _Cycle:
    response_started = False


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_an_answer_s_head_and_body_go_out_in_one_write() -> None:
    cycle, transport = _Cycle(), _Transport()
    one = _OneWriteTransport(cycle, transport)  # type: ignore[arg-type]
    one.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the answer starts: at once
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    one.write(b"HTTP/1.1 200 OK\r\n\r\n")  # the head: held
    assert len(transport.writes) == 1
    one.write(b"body")
    assert transport.writes[1] == b"HTTP/1.1 200 OK\r\n\r\nbody"  # joined
    one.write(b"more")  # later parts pass through
    assert transport.writes[2:] == [b"more"] and one.get_extra_info("peername") == "info:peername"


def test_a_held_head_is_written_before_close_and_big_bodies_are_not_copied() -> None:
    cycle, transport = _Cycle(), _Transport()
    cycle.response_started = True
    one = _OneWriteTransport(cycle, transport)  # type: ignore[arg-type]
    one.write(b"HEAD")
    one.close()  # e.g. the app failed after starting its answer: the head still goes out, then close
    assert transport.writes == [b"HEAD"] and transport.closed
    big, transport = b"x" * (_OneWriteTransport.JOIN_BYTES + 1), _Transport()
    one = _OneWriteTransport(cycle, transport)  # type: ignore[arg-type]
    one.write(b"HEAD")
    one.write(big)
    assert transport.writes == [b"HEAD", big]


def test_an_expect_100_continue_upload_is_answered(server: str) -> None:
    """The head of `100 Continue` is not held: a client that waits for it before its body still gets
    its answer (through the real server)."""
    body = b'{"text": "42", "seed": 3}'
    head = request_head(
        "POST",
        "/generate",
        {"Content-Type": "application/json", "Content-Length": str(len(body)), "Expect": "100-continue"},
    )
    sock = connect(server)
    try:
        started = time.perf_counter()
        sock.sendall(head)
        sock.settimeout(10)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = read_response(sock, started)
    finally:
        sock.close()
    assert answer.status == 200 and answer.body.startswith(b"\x89PNG")


def test_the_in_process_cpu_benchmark_runs_and_reports_each_thread(random_registry: Registry) -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:  # its own process: it configures logging
        command = [sys.executable, "-m", "benchmarks.cpu_in_process", "--registry", str(random_registry.root)]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)

    ran = bench("--concurrency", "8", "--rounds", "3", "--repeats", "2")
    lines = ran.stdout.splitlines()
    assert ran.returncode == 0 and len(lines) == 3, ran.stderr[-2000:]
    assert all(line.startswith("process ") for line in lines[:2])  # then each thread that used CPU
    assert lines[-1].startswith("CPU per request, median of 2 repeats of 3 x 8: ")
    assert '"logger": "app.access"' in ran.stderr  # access lines, as the server writes them
    wrong = bench("--body", '{"text": "4a"}')  # a wrong answer stops the run
    assert wrong.returncode == 1 and "answered 422, expected 200" in wrong.stderr
    nonsense = bench("--concurrency", "0")  # refused by the command line, before anything starts
    assert nonsense.returncode == 2 and "--concurrency: must be >= 1, got 0" in nonsense.stderr


def test_the_benchmark_runs_both_servers_on_one_device_and_refuses_one_this_machine_lacks(
    random_registry: Registry,
) -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "benchmarks.bench_generate", "--registry", str(random_registry.root)]
        return subprocess.run([*command, "--no-write", *args], capture_output=True, text=True, timeout=300)

    if shutil.which("hey") is None:
        pytest.fail("the benchmark needs hey: make deps-hey")
    small = ("--duration", "1", "--requests", "30", "--heavy-requests", "1", "--burst", "0")
    ran = bench("--device", "cpu", *small)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "both servers' model on cpu;" in ran.stdout
    rows = [line.split("|")[1].strip() for line in ran.stdout.splitlines() if line.startswith("| p")]
    assert rows == ["project", "plain"]
    assert "- 64 clients: project / plain throughput = **" in ran.stdout
    if not torch.cuda.is_available():  # `CVAE_DEVICE=cuda make bench` here: refused before any server
        started = time.perf_counter()
        refused = bench("--device", "cuda")
        assert refused.returncode == 2 and "CUDA is not available" in refused.stderr
        assert time.perf_counter() - started < 30 and "measuring" not in refused.stdout


def test_the_plain_server_refuses_a_device_this_machine_lacks() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        build_app("unused", "cuda")  # not a CPU server that would pass for a GPU one


def test_the_benchmark_report_shows_a_dash_not_nan_for_a_burst_that_refused_nothing() -> None:
    accepted = Run(seconds=[0.4, 0.6], statuses=[200, 200], wall_s=1.0)
    overload = Overload(requests=2, clients=2, deadline_s=10.0, hey=accepted, raw=[(200, None, 0.5)])
    overload.floor = Run(seconds=[0.002, 0.004], statuses=[503, 503], wall_s=0.1)
    project = Result(accepted, cpu_ms=0.4, overload=overload)
    lines = _overload_lines(overload) + _verdicts({"project": project}, 64)
    text = "\n".join(lines)
    assert "nan" not in text.lower()
    hey_row = next(line for line in lines if line.startswith("| hey |"))
    assert hey_row.split(" | ")[4:8] == ["-", "-", "-", "0.600"]  # 503 p50, p99, max; 200 max s
    assert "503 p99 **- ms** over both bursts" in text
    assert "**4.00 ms** (uvicorn)" in text  # figures that exist are still printed
