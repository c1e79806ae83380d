"""GET /: the demo page from `app/static/index.html` (its assets are mounted at /static by main)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
INDEX = STATIC_DIR / "index.html"

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def get_index() -> FileResponse:
    """The demo page, or a 404 that points to the API docs when the page is not installed."""
    if not INDEX.is_file():
        raise HTTPException(404, "the demo page is not installed; the API is documented at /docs")
    return FileResponse(INDEX, media_type="text/html")
