"""The dashboard at `/` and its files under /static (the page, its modules, vendored libraries).

Use: `app.include_router(router)` and `app.mount(STATIC_PREFIX, static_files())`. The page is
public like the docs; the data it shows comes from /api/ml/* with the signed-in key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
# The page itself is small and changes with each release: always revalidated.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


def static_files() -> StaticFiles:
    """The dashboard's modules and the vendored libraries (ETag and Last-Modified)."""
    return StaticFiles(directory=STATIC_DIR)
