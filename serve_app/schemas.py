"""Response models shared by the HTTP endpoints (pydantic, so OpenAPI documents them)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    error: str = Field(description="stable machine-readable code, e.g. unsupported_format")
    message: str
    request_id: str


class FaceMaskResponse(BaseModel):
    request_id: str
    width: int
    height: int
    boxes: list[list[float]] = Field(description="one [x1, y1, x2, y2] per detected face")
    mask_png_base64: str | None = Field(None, description="binary mask, white = face (if requested)")
    face_rgba_png_base64: str | None = Field(None, description="the image with alpha = mask (if requested)")
    overlay_png_base64: str | None = Field(None, description="mask tinted over the image (if requested)")


class HealthResponse(BaseModel):
    status: str
    version: str
    models: dict[str, str] = Field(default_factory=dict, description="deployment -> weights in use")
