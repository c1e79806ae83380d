"""GET /metrics: Prometheus text format, aggregated over workers in multiprocess mode."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app import metrics

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def get_metrics(request: Request) -> Response:
    """Every metric of `app.metrics` in the exposition format (this worker's live gauges sampled now)."""
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.sample_gauges()
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
