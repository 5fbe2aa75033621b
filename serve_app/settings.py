"""Runtime settings, all from environment variables (documented in the README).

Read when first used (never at import) with `settings()`, then kept for the process;
tests override by setting the variables before the process (or Ray worker) starts.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw


def _csv(name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    # Where assets are looked up first; the repo's download cache comes second.
    assets_dir: str
    assets_cache: str
    # Decoding limits (checked before a full decode).
    max_image_bytes: int
    max_image_pixels: int
    allowed_formats: tuple[str, ...]
    # Serve a production asset's test stand-in when the production file is absent
    # (local development without production weights). Off by default.
    allow_stand_ins: bool
    # Deadline for one request's model work; over it the request fails (no work kept).
    request_timeout_s: float
    # The HTTP edge (serve_app/edge.py, serve_app/http.py): the largest request body on
    # any endpoint (a declared larger one is refused before it is sent), and the time
    # the whole body has to arrive in (a trickling client cannot hold a request open).
    max_request_bytes: int
    body_timeout_s: float
    # /extract-faces: the work budget of one request, in decoded pixels over all its images.
    max_request_pixels: int
    # /extract-faces
    max_images_per_request: int
    allowed_origins: tuple[str, ...]  # CORS; empty = no cross-origin access
    # Server-side fetching of image_url inputs (hostile URLs).
    url_allowlist: tuple[str, ...]  # hosts or CIDRs allowed even when private/loopback
    url_connect_timeout_s: float
    url_read_timeout_s: float
    url_max_redirects: int
    # The external SAM2 service's settings live in serve_app/sam2_config.py.

    @staticmethod
    def from_env() -> Settings:
        return Settings(
            assets_dir=_str("FACEGRAPH_ASSETS_DIR", ""),
            assets_cache=_str("FACEGRAPH_ASSETS_CACHE", str(REPO_ROOT / ".assets")),
            max_image_bytes=_int("MAX_IMAGE_BYTES", 20 * 1024 * 1024),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", 40_000_000),
            allowed_formats=tuple(
                f.strip().upper()
                for f in _str("ALLOWED_IMAGE_FORMATS", "PNG,JPEG,WEBP,BMP,TIFF,GIF,MPO").split(",")
                if f.strip()
            ),
            allow_stand_ins=_str("FACEGRAPH_ALLOW_STAND_INS", "0").lower() in ("1", "true", "yes"),
            request_timeout_s=_float("REQUEST_TIMEOUT", 180.0),
            max_request_bytes=_int("MAX_REQUEST_BYTES", 64 * 1024 * 1024),
            body_timeout_s=_float("BODY_TIMEOUT", 60.0),
            max_request_pixels=_int("MAX_REQUEST_PIXELS", 200_000_000),
            max_images_per_request=_int("MAX_IMAGES_PER_REQUEST", 100),
            allowed_origins=_csv("ALLOWED_ORIGINS"),
            url_allowlist=_csv("URL_FETCH_ALLOWLIST"),
            url_connect_timeout_s=_float("URL_FETCH_CONNECT_TIMEOUT", 5.0),
            url_read_timeout_s=_float("URL_FETCH_READ_TIMEOUT", 10.0),
            url_max_redirects=_int("URL_FETCH_MAX_REDIRECTS", 3),
        )


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()
