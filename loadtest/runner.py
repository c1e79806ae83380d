"""`python -m loadtest`: run the service, a real Prometheus and Locust, then write the report.

    python -m loadtest --duration 60 --users 32          # what `make loadtest` runs

Unless `--target` names a running service, it seeds a registry that has no version with the shipped
pretrained model (as `python -m model.shipped` does; with `--train` it trains one instead when none is
active, `python -m training --if-empty`), starts `python -m app` on a free port and a Prometheus server
scraping it every second (unless `--prometheus-url` names one), warms each endpoint up, runs Locust
headless with the mix of `loadtest/locustfile.py`, waits for a scrape after the last answer, and writes
`reports/loadtest-<timestamp>/`. Everything it started is stopped on the way out, also on Ctrl-C,
SIGTERM or an error. Progress goes to stderr; the report's path is the last line on stdout.
Exit code: 0 when Locust saw no failure and both sides' request counts agree, else 1 (2 without Locust,
130 if interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest import figures, report
from loadtest.processes import free_port, run_foreground, running, stop, wait_http_ok
from loadtest.prom import PromClient, PromError, scrape_config, server_command
from loadtest.server import start_server
from loadtest.warmup import model_version, warm_up
from model.errors import ModelError
from model.registry import Registry, default_registry
from model.shipped import seed_registry

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=60, help="seconds of load")
    p.add_argument("--users", type=int, default=32, help="concurrent Locust users")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    p.add_argument(
        "--registry",
        type=Path,
        default=default_registry(),
        help="model registry ($CVAE_REGISTRY)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="train a model when the registry has no active version (`python -m training --if-empty`) "
        "instead of seeding an empty registry with the shipped pretrained model",
    )
    p.add_argument("--train-args", help="extra flags for `python -m training --if-empty` (needs --train)")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("CVAE_WORKERS", "1")),
        help="uvicorn workers of the service ($CVAE_WORKERS)",
    )
    p.add_argument("--target", help="URL of an already running service (then none is started)")
    p.add_argument("--prometheus-url", help="URL of a Prometheus already scraping the target")
    p.add_argument("--job", default="cvae-api", help="Prometheus job name of the service's scrapes")
    p.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes")
    p.add_argument("--out", type=Path, default=Path("reports"), help="where report directories go")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the service")
    return p


def say(message: str) -> None:
    """Progress on stderr (stdout carries only the report path)."""
    print(f"[loadtest] {message}", file=sys.stderr, flush=True)


def report_dir(out: Path) -> Path:
    """A new, empty `reports/loadtest-<UTC timestamp>` directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", *(f"-{i}" for i in range(1, 100))):
        path = out / f"loadtest-{stamp}{suffix}"
        with contextlib.suppress(FileExistsError):
            path.mkdir(parents=True)
            return path
    raise FileExistsError(f"no free report directory name under {out}")


def prepare_model(args: argparse.Namespace) -> None:
    """Seed a registry without versions with the shipped model, or (--train) train one if none is active."""
    if args.train:
        train_args = args.train_args or ""
        say(f"model: python -m training --if-empty --registry {args.registry} {train_args}".rstrip())
        run_foreground(
            [
                sys.executable,
                "-m",
                "training",
                "--registry",
                str(args.registry),
                "--if-empty",
                *shlex.split(train_args),
            ]
        )
        return
    version = seed_registry(Registry(args.registry, writer=True))
    if version is None:
        say(f"model: {args.registry} already has versions; the service serves its active one")
    else:
        say(f"model: {args.registry} had no version; the shipped pretrained model is {version}, active")


def start_service(stack: contextlib.ExitStack, args: argparse.Namespace, run_dir: Path) -> str:
    """Prepare the model, then start `python -m app` on a free port; returns its URL."""
    prepare_model(args)
    port, log = free_port(), run_dir / "service.log"
    say(f"service: python -m app on http://127.0.0.1:{port} ({args.workers} worker(s)), log {log}")
    # The CVAE_* settings of our environment configure the service (the multiprocess metrics
    # directory of several workers is made by `python -m app` itself).
    server = stack.enter_context(
        start_server(
            args.registry,
            port=port,
            log_path=log,
            inherit_settings=True,
            timeout_s=args.startup_timeout,
            workers=args.workers,
        )
    )
    return server.base_url


def start_prometheus(
    stack: contextlib.ExitStack, target: str, args: argparse.Namespace, run_dir: Path, tmp: Path
) -> PromClient:
    """A throwaway Prometheus scraping `target` every scrape interval; returns its client."""
    config = run_dir / "prometheus.yml"
    hostport = target.split("://", 1)[-1].rstrip("/")
    config.write_text(scrape_config(hostport, args.scrape_interval))
    port = free_port()
    say(f"prometheus: 127.0.0.1:{port} scraping {hostport} every {args.scrape_interval:g} s")
    log = run_dir / "prometheus.log"
    proc = stack.enter_context(running(server_command(config, tmp / "tsdb", port), log))
    wait_http_ok(f"http://127.0.0.1:{port}/-/ready", 60, proc, log)
    return PromClient(f"http://127.0.0.1:{port}")


def locust_command(args: argparse.Namespace, target: str, run_dir: Path) -> list[str]:
    spawn_rate = args.spawn_rate or args.users
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        target,
        "--users",
        str(args.users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{args.duration:g}s",
        "--stop-timeout",
        "15",
        "--csv",
        str(run_dir / "locust"),
        "--csv-full-history",
        "--json-file",
        str(run_dir / "locust"),
        "--html",
        str(run_dir / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def run_locust(args: argparse.Namespace, target: str, run_dir: Path) -> int | None:
    """Run Locust headless to the end (its users finish their requests); returns its exit code."""
    say(f"locust: {args.users} users for {args.duration:g} s against {target}, log {run_dir / 'locust.log'}")
    with running(locust_command(args, target, run_dir), run_dir / "locust.log") as proc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=args.duration + 120)
        return stop(proc)


def measure(args: argparse.Namespace, target: str, prom: PromClient, run_dir: Path) -> dict[str, Any]:
    """Warm up, bracket the Locust run with two scrapes, and collect both sides' figures."""
    say("warm-up: one request to each endpoint (not counted)")
    warm_up(target)
    before_at = prom.wait_scrape_after(time.time(), args.job)
    before = figures.counters(prom, before_at)
    code = run_locust(args, target, run_dir)
    say("waiting for a scrape after the last answer")
    after_at = prom.wait_scrape_after(time.time() + 0.2, args.job)
    entries = figures.load_locust_json(run_dir / "locust.json")
    start = min(float(e["start_time"]) for e in entries)
    end = max(float(e["last_request_timestamp"] or start) for e in entries)
    window = figures.Window(start=start, end=end, before=before_at, after=after_at)
    client = figures.client_figures(entries, window.seconds)
    server = figures.server_figures(prom, before, window)
    series = figures.server_series(prom, window, rate_window_s=max(3.0, 3 * args.scrape_interval))
    history = {
        **figures.client_history(run_dir / "locust_stats_history.csv"),
        **{f"rate_{k}": v for k, v in figures.client_rate(entries).items()},
    }
    run = {
        "started_at": datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"),
        "duration_s": args.duration,
        "measured_s": round(window.seconds, 3),
        "users": args.users,
        "spawn_rate": args.spawn_rate or args.users,
        "target": target,
        "prometheus": prom.url,
        "scrape_interval_s": args.scrape_interval,
        "model_version": model_version(target),
        "workers": None if args.target else args.workers,
        "locust_exit_code": code,
        "cpu_count": os.cpu_count(),
    }
    record = report.summary(run, client, server)
    report.write(run_dir, record, history, series, t0=start)
    return record


def execute(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Start what is needed, measure, and stop everything again."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="cvae-loadtest-") as tmp_name:
        tmp = Path(tmp_name)
        target = args.target.rstrip("/") if args.target else start_service(stack, args, run_dir)
        if args.target:
            wait_http_ok(f"{target}/readyz", args.startup_timeout)
        if args.prometheus_url:
            prom = PromClient(args.prometheus_url)
        else:
            prom = start_prometheus(stack, target, args, run_dir, tmp)
        return measure(args, target, prom, run_dir)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print the report directory as the last line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train_args is not None and not args.train:
        parser.error("--train-args needs --train")
    if importlib.util.find_spec("locust") is None:
        say("Locust is not installed: pip install -e '.[load]' (or make loadtest)")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = report_dir(args.out)
    try:
        record = execute(args, run_dir)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    except (PromError, ModelError, OSError, RuntimeError, ValueError) as exc:
        say(f"failed: {exc}")
        print(run_dir, flush=True)
        return 1
    client, agree = record["client"], record["agreement"]
    say(
        f"Locust {client['requests']:.0f} requests, {client['failures']:.0f} failures; Prometheus "
        f"{record['server']['requests']:.0f} requests; counts differ by {agree['request_count_diff_pct']} %"
    )
    say(f"report: {run_dir / 'summary.md'}")
    print(run_dir, flush=True)
    return 0 if client["failures"] == 0 and agree["within_tolerance"] else 1
