"""The demo page: GET / on the application at route prefix "/" (face_extract), with its
script and style under /demo/. Static files from serve_app/web/static, no build step. The
page calls every pipeline endpoint on the same origin (so no CORS), and each endpoint's
GET <prefix>/health to show which pipelines this server has deployed.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from serve_app import errors

STATIC = Path(__file__).resolve().parents[1] / "web" / "static"
# Served by name from this list only: nothing from the URL reaches the file system.
FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# A redeploy with a new page must not meet a browser's stale copy of the script.
NO_CACHE = {"Cache-Control": "no-cache"}


def add_demo_routes(app: FastAPI) -> None:
    """GET / (the page) and GET /demo/{app.js,style.css} on `app`; kept out of its OpenAPI."""

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)

    @app.get("/demo/{name}", include_in_schema=False)
    async def demo_file(name: str) -> FileResponse:
        if name not in FILES:
            raise errors.ApiError(404, "not_found", f"the demo page has no file {name!r}")
        return FileResponse(STATIC / name, media_type=FILES[name], headers=NO_CACHE)
