"""Prometheus metrics of the service (histograms, not summaries).

With `PROMETHEUS_MULTIPROC_DIR` set before this module is imported, prometheus_client writes every
value to files in that directory and `/metrics` aggregates the files of all uvicorn workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("cvae_requests", "HTTP requests answered", ["endpoint", "method", "status"])
REQUEST_LATENCY = Histogram(
    "cvae_request_duration_seconds", "Time to answer a request", ["endpoint"], buckets=_LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("cvae_requests_in_flight", "Requests being served", multiprocess_mode="livesum")
QUEUE_WAIT = Histogram(
    "cvae_queue_wait_seconds", "Time a request waited for its batch", ["kind"], buckets=_LATENCY_BUCKETS
)
COMPUTE = Histogram(
    "cvae_compute_seconds", "Forward-pass time of one batch", ["kind"], buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "cvae_batch_size", "Requests sharing one forward pass", ["kind"], buckets=_BATCH_BUCKETS
)
BATCH_ROWS = Histogram(
    "cvae_batch_rows", "Network rows in one forward pass", ["kind"], buckets=_BATCH_BUCKETS
)
QUEUE_DEPTH = Gauge("cvae_queue_depth", "Requests waiting for a batch", multiprocess_mode="livesum")
REJECTED = Counter("cvae_rejected", "Inference requests refused before computing", ["reason"])
CONNECTIONS_REFUSED = Counter(
    "cvae_connections_refused",
    "Connections refused or closed by a connection limit (app/connections.py)",
    ["reason"],
)
DIGITS = Counter("cvae_digits_generated", "Digit tiles generated", ["version"])
MODEL_INFO = Gauge(
    "cvae_model_info",
    "Loaded model versions (1 = loaded)",
    ["version", "device", "active"],
    multiprocess_mode="livemax",
)
MODEL_SERVING = Gauge(
    "cvae_model_serving",
    "The version answering requests without an explicit version (1 = this one)",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_LOADS = Counter("cvae_model_loads", "Model versions loaded and warmed", ["version"])
MODEL_LOAD_FAILURES = Counter(
    "cvae_model_load_failures", "Model versions that could not be loaded (corrupt, incompatible)", ["version"]
)
MODEL_LOAD_SECONDS = Histogram(
    "cvae_model_load_seconds",
    "Time to load and warm a model version",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
DRAINING = Gauge(
    "cvae_draining", "1 from SIGTERM until exit: /readyz answers 503", multiprocess_mode="livemax"
)
UPLOAD_RECON_MSE = Histogram(
    "cvae_upload_recon_mse",
    "Mean squared error of reconstructions of uploads",
    ["version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
)
UPLOAD_NEG_ELBO = Histogram(
    "cvae_upload_neg_elbo_nats",
    "Negative ELBO of uploads under their label (nats)",
    ["version"],
    buckets=(25, 50, 75, 100, 125, 150, 200, 300, 500, 1000),
)


def render() -> tuple[bytes, str]:
    """The exposition text (aggregated over workers in multiprocess mode) and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """Drop this worker's live gauges from the aggregate (called at shutdown in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())
