"""`python -m loadtest.cluster_smoke` (`make cluster-smoke`): a fleet of 3 replicas behind a real HAProxy,
on loopback, under steady load, through the events a cluster lives through.

Three `python -m app` replicas share one registry directory (the ReadWriteMany volume of deploy/k8s/) and
sit behind HAProxy running deploy/haproxy/haproxy.cfg (health checks on /readyz, retries on another
replica). While loadtest/traffic.py sends the load test's mix through HAProxy, the phases are:

1. spread:   steady load; every replica must serve >= 20 % of the requests (from its own /metrics);
2. promote:  the training job trains a new version into the shared registry and makes it active; every
             replica must serve it within its poll interval plus its load time, with zero failed requests;
3. rolling:  each replica in turn gets SIGTERM (it drains and exits 0) and is started again: zero failed;
4. sigkill:  one replica is killed; HAProxy must take it out within its check interval; the failed
             requests are counted (the goal is 0, thanks to HAProxy's retries).

It writes report.json and report.md (requests and failures per phase, per-replica shares, convergence
and detection times, HAProxy's retry counters) plus every process's log, prints the report directory
last, and exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from loadtest.exposition import Samples, parse_samples
from loadtest.fleet import REPLICA_NAMES, HAProxy, Replica
from loadtest.processes import StartError
from loadtest.traffic import Traffic
from model.registry import Registry

INFERENCE_ENDPOINTS = ("/generate", "/encode", "/reconstruct")
HAPROXY_CHECK_S = 0.5 * 2  # deploy/haproxy/haproxy.cfg: inter 500ms, fall 2
MIN_SHARE = 0.20
TRAIN_ARGS = "--preset tiny --epochs 2 --max-examples 3000 --no-eval --no-progress"


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.cluster_smoke",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--registry", type=Path, help="a registry to start from (copied; default: train one)")
    parser.add_argument("--phase-s", type=float, default=10.0, help="seconds of load in spread and sigkill")
    parser.add_argument("--clients", type=int, default=6, help="concurrent load clients")
    parser.add_argument("--think-ms", type=float, default=20.0, help="mean pause between a client's requests")
    parser.add_argument("--poll-s", type=float, default=1.0, help="CVAE_REGISTRY_POLL_S of the replicas")
    parser.add_argument("--drain-delay-s", type=float, default=1.5, help="CVAE_DRAIN_DELAY_S of the replicas")
    parser.add_argument("--restart", type=int, default=3, help="replicas the rolling phase restarts (1-3)")
    parser.add_argument("--train-args", default=TRAIN_ARGS, help="arguments of `python -m training`")
    parser.add_argument("--out", type=Path, help="report directory (default reports/cluster-smoke-<UTC>)")
    return parser.parse_args(argv)


# -- reading the replicas -----------------------------------------------------------------------
def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        return parse_samples(response.read().decode())


def served_requests(replica: Replica) -> float:
    """Inference requests this replica answered, from its own /metrics."""
    samples = scrape(replica.url)
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "cvae_requests_total" and dict(labels).get("endpoint") in INFERENCE_ENDPOINTS
    )


def load_seconds(replica: Replica) -> float:
    """Total seconds this replica spent loading and warming versions."""
    return scrape(replica.url).get(("cvae_model_load_seconds_sum", ()), 0.0)


def serving(replica: Replica) -> str | None:
    try:
        with urllib.request.urlopen(replica.url + "/readyz", timeout=2) as response:
            return str(json.loads(response.read())["model_version"])
    except (OSError, ValueError, KeyError):
        return None


# -- phases --------------------------------------------------------------------------------------
class Smoke:
    """The fleet, the load and the figures of one run."""

    def __init__(self, args: argparse.Namespace, out: Path, registry: Path):
        self.args = args
        self.out = out
        self.registry = Registry(registry)
        settings: dict[str, object] = {
            "registry_poll_s": args.poll_s,
            "drain_delay_s": args.drain_delay_s,
            "workers": 1,
            "torch_threads": 1,
            "log_json": "true",
        }
        self.replicas = [Replica(n, registry, out / f"{n}.log", settings) for n in REPLICA_NAMES]
        self.haproxy = HAProxy(self.replicas, out / "haproxy.log")
        self.traffic = Traffic(self.haproxy.url, args.clients, args.think_ms / 1000)
        settings_used = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
        self.report: dict = {"phases": {}, "settings": settings_used}

    def phase(self, name: str) -> dict:
        say(f"phase {name}")
        self.traffic.phase = name
        return self.report["phases"].setdefault(name, {})

    def spread(self) -> None:
        figures = self.phase("spread")
        before = [served_requests(r) for r in self.replicas]
        time.sleep(self.args.phase_s)
        served = [served_requests(r) - b for r, b in zip(self.replicas, before, strict=True)]
        total = sum(served) or 1.0
        figures["served"] = {r.name: int(n) for r, n in zip(self.replicas, served, strict=True)}
        figures["shares"] = {r.name: round(n / total, 4) for r, n in zip(self.replicas, served, strict=True)}
        figures["check_every_share_at_least_20pct"] = min(figures["shares"].values()) >= MIN_SHARE

    def promote(self) -> None:
        figures = self.phase("promote")
        old = self.registry.active_version()
        loaded_before = [load_seconds(r) for r in self.replicas]
        command = [
            sys.executable,
            "-m",
            "training",
            "--registry",
            str(self.registry.root),
            *shlex.split(self.args.train_args),
        ]
        started = time.monotonic()
        with (self.out / "training.log").open("ab") as log:
            training = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            while (new := self.registry.active_version()) == old:
                if training.poll() is not None:
                    raise StartError(
                        f"training exited with {training.returncode} without a new active version"
                    )
                time.sleep(0.02)
            activated = time.monotonic()
            converged: dict[str, float] = {}
            while len(converged) < len(self.replicas) and time.monotonic() - activated < 60:
                for replica in self.replicas:
                    if replica.name not in converged and serving(replica) == new:
                        converged[replica.name] = round(time.monotonic() - activated, 3)
                time.sleep(0.02)
            training.wait(300)
        load_s = [round(load_seconds(r) - b, 3) for r, b in zip(self.replicas, loaded_before, strict=True)]
        bound = self.args.poll_s + max(load_s, default=0.0)
        time.sleep(1.0)  # requests that started before the switch finish inside this phase
        figures.update(
            old_version=old,
            new_version=new,
            training_s=round(activated - started, 1),
            convergence_s=converged,
            load_s=dict(zip(REPLICA_NAMES, load_s, strict=True)),
            fleet_convergence_s=max(converged.values(), default=None),
            bound_s=round(bound, 3),
        )
        figures["check_all_converged"] = len(converged) == len(self.replicas)
        # One poll interval, the load, plus the time our own /readyz checks take on a loaded machine.
        figures["check_converged_within_poll_plus_load"] = (
            figures["check_all_converged"] and max(converged.values()) <= bound + 0.5
        )

    def rolling(self) -> None:
        figures = self.phase("rolling")
        restarts = []
        for replica in self.replicas[: self.args.restart]:
            signalled = time.monotonic()
            code = replica.terminate()
            stopped = time.monotonic()
            replica.start()
            back = self.haproxy.wait_for(lambda s, name=replica.name: s.get(name) == "UP", 30.0)
            restarts.append(
                {
                    "replica": replica.name,
                    "exit_code": code,
                    "drain_and_exit_s": round(stopped - signalled, 2),
                    "back_in_rotation_s": round(time.monotonic() - signalled, 2),
                    "up_wait_s": back,
                }
            )
        figures["restarts"] = restarts
        figures["check_every_exit_code_0"] = all(r["exit_code"] == 0 for r in restarts)

    def sigkill(self) -> None:
        figures = self.phase("sigkill")
        victim = self.replicas[-1]
        time.sleep(1.0)
        killed = time.monotonic()
        victim.kill()
        detected = self.haproxy.wait_for(lambda s: s.get(victim.name) != "UP", 30.0)
        time.sleep(max(0.0, self.args.phase_s - (time.monotonic() - killed)))
        figures.update(
            replica=victim.name, detected_down_s=round(detected, 3), haproxy_check_interval_s=HAPROXY_CHECK_S
        )
        figures["check_out_within_check_interval"] = detected <= HAPROXY_CHECK_S + 0.5

    # -- the whole run ---------------------------------------------------------------------------
    def run(self) -> None:
        say(f"starting {len(self.replicas)} replicas sharing {self.registry.root}")
        with ThreadPoolExecutor(len(self.replicas)) as pool:  # they start side by side
            list(pool.map(lambda replica: replica.start(), self.replicas))
        say(f"haproxy {self.haproxy.url} (deploy/haproxy/haproxy.cfg)")
        self.haproxy.start()
        self.traffic.start()
        time.sleep(1.0)  # warm-up, not counted
        self.spread()
        self.promote()
        self.rolling()
        self.sigkill()
        self.traffic.stop()
        self.summarise()

    def summarise(self) -> None:
        for name, figures in self.report["phases"].items():
            outcomes = self.traffic.in_phase(name)
            failed = [o for o in outcomes if not o.ok]
            figures["requests"] = len(outcomes)
            figures["failed"] = len(failed)
            figures["failures"] = sorted({f"{o.status} {o.error[:120]}" for o in failed})[:10]
        phases = self.report["phases"]
        for name in ("promote", "rolling"):
            phases[name]["check_zero_failed"] = phases[name]["failed"] == 0
        self.report["haproxy"] = self.haproxy.backend_counters()
        self.report["requests"] = sum(p["requests"] for p in phases.values())
        self.report["failed"] = sum(p["failed"] for p in phases.values())
        checks = {f"{n}.{k}": v for n, p in phases.items() for k, v in p.items() if k.startswith("check_")}
        self.report["checks"] = checks
        self.report["passed"] = all(checks.values())

    @contextlib.contextmanager
    def cleanup(self) -> Iterator[None]:
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self.traffic.stop()
            self.haproxy.stop()
            for replica in self.replicas:
                if replica.alive():
                    replica.terminate(20.0)


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    phases = report["phases"]
    lines = [
        "# Cluster smoke: 3 replicas behind HAProxy",
        "",
        f"Result: **{'PASSED' if report['passed'] else 'FAILED'}**; {report['requests']} requests, "
        f"{report['failed']} failed.",
        "",
        "| phase | requests | failed |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {p.get('requests', 0)} | {p.get('failed', 0)} |" for name, p in phases.items()),
        "",
    ]
    spread = phases.get("spread", {})
    if "shares" in spread:
        lines += [
            "Per-replica share of the spread phase (each replica's own `cvae_requests_total`): "
            + ", ".join(f"{n} {s:.1%} ({spread['served'][n]})" for n, s in spread["shares"].items()),
            "",
        ]
    promote = phases.get("promote", {})
    if "convergence_s" in promote:
        lines += [
            f"Promotion {promote['old_version']} -> {promote['new_version']}: every replica served it "
            f"{promote['fleet_convergence_s']} s after it became active (bound: poll "
            f"{report['settings']['poll_s']} s + load {max(promote['load_s'].values())} s = "
            f"{promote['bound_s']} s); per replica {promote['convergence_s']}.",
            "",
        ]
    if "restarts" in phases.get("rolling", {}):
        lines += [
            "Rolling restart: "
            + "; ".join(
                f"{r['replica']} exit {r['exit_code']} after {r['drain_and_exit_s']} s, back in "
                f"{r['back_in_rotation_s']} s"
                for r in phases["rolling"]["restarts"]
            ),
            "",
        ]
    kill = phases.get("sigkill", {})
    if "detected_down_s" in kill:
        lines += [
            f"SIGKILL {kill['replica']}: HAProxy took it out after {kill['detected_down_s']} s "
            f"(check interval {kill['haproxy_check_interval_s']} s); "
            f"{kill.get('failed', 0)} failed requests.",
            "",
        ]
    lines += [
        f"HAProxy backend counters: {report.get('haproxy', {})}",
        "",
        "Checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in report["checks"].items()),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def prepare_registry(args: argparse.Namespace, work: Path, out: Path) -> Path:
    """The shared registry of the run: a copy of --registry, else a freshly trained one."""
    registry = work / "registry"
    if args.registry:
        shutil.copytree(args.registry, registry)
        if Registry(registry).active_version() is None:
            raise StartError(f"{args.registry} has no active version")
        return registry
    say(f"training the first version: python -m training {args.train_args}")
    command = [sys.executable, "-m", "training", "--registry", str(registry), *shlex.split(args.train_args)]
    with (out / "training.log").open("ab") as log:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=True)
    return registry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or Path("reports") / f"cluster-smoke-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cvae-cluster-") as work:
        smoke = Smoke(args, out, prepare_registry(args, Path(work), out))
        try:
            with smoke.cleanup():
                smoke.run()
        except StartError as exc:
            say(f"failed: {exc}")
            smoke.report.update(passed=False, error=str(exc), checks={}, requests=0, failed=0)
        write_report(out, smoke.report)
    say((out / "report.md").read_text())
    print(out)
    return 0 if smoke.report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
