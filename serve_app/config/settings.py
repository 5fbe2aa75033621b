"""Runtime settings, all from environment variables (documented in the README).

Read when first used (never at import) with `settings()`, then kept for the process;
tests override by setting the variables before the process (or Ray worker) starts.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve_app.config.spec import validation_message

REPO_ROOT = Path(__file__).resolve().parents[2]  # the one repo-root constant


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
    # Use a production asset's test stand-in when the production file is absent, with a
    # warning, and name it wherever weights are named (health routes, job outputs). One
    # rule for the server, the batch jobs and the image: on by default, so the README's
    # commands work on a machine without production weights; 0 refuses (production).
    allow_stand_ins: bool
    # Deadline for one request's model work; over it the request fails (no work kept).
    request_timeout_s: float
    # The HTTP edge (serve_app/web/edge.py, serve_app/web/http.py): the largest request body on
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
    # The external SAM2 service's settings: Sam2Config below.

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
            allow_stand_ins=_str("FACEGRAPH_ALLOW_STAND_INS", "1").lower() in ("1", "true", "yes"),
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


# ---- the external SAM2 service --------------------------------------------------------
# The external SAM2 service's settings, in one place: each field's default, limits,
# help and environment variable. The endpoint's builder args (`sam2:` in
# serve_config.yaml), the batch job's `--sam2-*` options and the SAM2_* environment all
# fill this one model. The API key comes from the environment only, never a file or a
# command line.


def _env(name: str) -> dict:
    return {"json_schema_extra": {"env": name}}


class Sam2Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("", description="the SAM2 service's POST URL; empty: polygon masks only", **_env("SAM2_URL"))
    api_key: str = Field("", description="bearer token (environment only)", repr=False, **_env("SAM2_API_KEY"))
    image_field: str = Field("image_base64", description="JSON field for the PNG", **_env("SAM2_IMAGE_FIELD"))
    points_field: str = Field("points", description="JSON field for [[x, y, label], ...]", **_env("SAM2_POINTS_FIELD"))
    box_field: str = Field("box", description="JSON field for [x1, y1, x2, y2]", **_env("SAM2_BOX_FIELD"))
    multimask_field: str = Field("multimask", description="JSON field for the multimask flag", **_env("SAM2_MULTIMASK"))
    return_prob_field: str = Field(
        "return_prob", description="JSON field asking for probabilities", **_env("SAM2_RETURN_PROB")
    )
    timeout_s: float = Field(
        10.0, gt=0, le=600, description="one deadline for all faces of an image", **_env("SAM2_TIMEOUT")
    )
    retries: int = Field(2, ge=0, le=10, description="retries on connection errors and 5xx", **_env("SAM2_RETRIES"))
    concurrency: int = Field(4, ge=1, le=256, description="calls in flight per client", **_env("SAM2_CONCURRENCY"))
    send: Literal["image", "crop"] = Field(
        "image", description="image: the image once per request; crop: a crop around each face", **_env("SAM2_SEND")
    )
    # After this many unavailable answers in a row (0: never), stop calling for
    # breaker_cooldown_s and fall back at once, instead of every request paying the
    # retries or the full timeout against a service that is down.
    breaker_failures: int = Field(
        5,
        ge=0,
        le=1000,
        description="unavailable answers in a row that open the breaker (0: never)",
        **_env("SAM2_BREAKER_FAILURES"),
    )
    breaker_cooldown_s: float = Field(
        30.0, ge=0, le=3600, description="seconds the open breaker skips SAM2", **_env("SAM2_BREAKER_COOLDOWN")
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"SAM2_URL must be an http:// or https:// URL, not {v!r}")
        return v

    @staticmethod
    def env_names() -> dict[str, str]:
        return {name: info.json_schema_extra["env"] for name, info in Sam2Config.model_fields.items()}

    @staticmethod
    def from_env(**overrides: Any) -> Sam2Config:
        """The SAM2_* environment (read now, not at import), with every override that
        is not None on top. A bad value raises ValueError with one readable line."""
        values = {name: os.environ[env] for name, env in Sam2Config.env_names().items() if os.environ.get(env)}
        unknown = set(overrides) - set(Sam2Config.model_fields)
        if unknown or "api_key" in overrides:
            raise ValueError(f"unknown or not allowed SAM2 options: {sorted(unknown | ({'api_key'} & set(overrides)))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return Sam2Config(**values)
        except ValidationError as exc:
            raise ValueError("SAM2 settings: " + validation_message(exc)) from None


# Options that may come from a config file or a command line (never the key).
OVERRIDABLE = tuple(name for name in Sam2Config.model_fields if name != "api_key")
