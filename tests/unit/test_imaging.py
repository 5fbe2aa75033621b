import base64
import io

import numpy as np
import pytest
from PIL import Image

from serve_app import errors
from serve_app.imaging import (
    OverBudget,
    PixelBudget,
    b64,
    base64_length,
    data_uri,
    decode_base64,
    decode_image,
    encode_jpeg,
    encode_png,
)
from tests.images import encode, gradient_rgb, huge_pixels_png


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_accepted_format_decodes_to_uint8_rgb(fmt):
    src = gradient_rgb(64, 48)
    out = decode_image(encode(src, fmt))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    if fmt in ("PNG", "BMP", "TIFF"):  # lossless
        assert np.array_equal(out, np.asarray(src))


def test_gif_takes_the_first_frame():
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue])
    out = decode_image(data)
    assert tuple(out[4, 4]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_any_mode_becomes_rgb(mode):
    img = gradient_rgb(32, 16)
    if mode == "I;16":
        arr = (np.linspace(0, 65535, 32 * 16).reshape(16, 32)).astype(np.uint16)
        img = Image.fromarray(arr)  # uint16 -> mode I;16
        assert img.mode == "I;16"
        fmt = "PNG"
    else:
        img = img.convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = decode_image(encode(img, fmt))
    assert out.shape == (16, 32, 3) and out.dtype == np.uint8
    if mode == "I;16":  # the full 16-bit range is scaled, not clipped to 255
        assert out.min() == 0 and out.max() == 255


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    out = decode_image(encode(img, "PNG"))
    assert tuple(out[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = gradient_rgb(60, 20)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (60, 20)


def test_empty_truncated_and_not_an_image_are_4xx():
    with pytest.raises(errors.ApiError) as e:
        decode_image(b"")
    assert (e.value.status, e.value.code) == (400, "empty_image")
    jpeg = encode(gradient_rgb(256, 256), "JPEG")
    with pytest.raises(errors.ApiError) as e:
        decode_image(jpeg[: len(jpeg) // 2])
    assert (e.value.status, e.value.code) == (400, "corrupt_image")
    with pytest.raises(errors.ApiError) as e:
        decode_image(b"%PDF-1.4 definitely not an image")
    assert (e.value.status, e.value.code) == (415, "unsupported_format")


def test_a_known_but_unaccepted_format_is_415():
    data = encode(gradient_rgb(16, 16), "ICO")
    with pytest.raises(errors.ApiError) as e:
        decode_image(data)
    assert e.value.status == 415 and "ICO" in e.value.message


def test_byte_limit_is_checked_first():
    data = encode(gradient_rgb(64, 64), "PNG")
    with pytest.raises(errors.ApiError) as e:
        decode_image(data, max_bytes=len(data) - 1)
    assert (e.value.status, e.value.code) == (413, "too_large")


def test_pixel_limit_is_checked_before_decoding(monkeypatch):
    data = huge_pixels_png(4000, 3500)
    assert len(data) < 200_000  # small file, 14 M pixels: the bomb shape
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(errors.ApiError) as e:
        decode_image(data, max_pixels=12_000_000)
    assert e.value.status == 413 and "14000000" in e.value.message
    assert decoded == []  # refused from the header alone


def test_encoders_round_trip():
    rgb = np.asarray(gradient_rgb(40, 30))
    back = np.asarray(Image.open(io.BytesIO(encode_png(rgb))))
    assert np.array_equal(back, rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgba)))), rgba)
    mask = (np.arange(30 * 40).reshape(30, 40) % 2 * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(mask)))), mask)
    jpeg = Image.open(io.BytesIO(encode_jpeg(rgb)))
    assert jpeg.format == "JPEG" and np.abs(np.asarray(jpeg).astype(int) - rgb).mean() < 4


def test_base64_and_data_uris():
    raw = b"\x89PNG\r\n\x1a\nxyz"
    assert decode_base64(b64(raw)) == raw
    assert decode_base64(data_uri(raw, "image/png")) == raw
    assert data_uri(raw, "image/jpeg").startswith("data:image/jpeg;base64,")
    with pytest.raises(errors.ApiError) as e:
        decode_base64("not base64 !!!")
    assert e.value.status == 400
    with pytest.raises(errors.ApiError):
        decode_base64("data:image/png," + base64.b64encode(raw).decode())


def test_mime_wrapped_base64_and_surrounding_whitespace_are_accepted():
    raw = encode(gradient_rgb(40, 30), "PNG")
    text = base64.b64encode(raw).decode()
    mime = base64.encodebytes(raw).decode()  # 76-character lines, "\n" after each
    assert "\n" in mime.strip()
    crlf = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    uri = f" {data_uri(raw, 'image/png')} "
    for wrapped in (mime, crlf, f"  \n{text}\n\t", "data:image/png;base64,\r\n" + crlf + "\r\n", uri):
        assert decode_base64(wrapped) == raw
        assert decode_image(decode_base64(wrapped)).shape == (30, 40, 3)
    assert base64_length(crlf) == len(text)
    for bad in (text[:10] + "*" + text[10:], text[:10] + "\u00a0" + text[10:]):  # not base64, not ASCII whitespace
        with pytest.raises(errors.ApiError, match="invalid base64"):
            decode_base64(bad)


def test_a_pixel_budget_is_charged_from_headers_before_decoding():
    png = encode(gradient_rgb(100, 50), "PNG")  # 5000 pixels
    budget = PixelBudget(12_000)
    decode_image(png, budget=budget)
    decode_image(png, budget=budget)
    assert budget.spent == 10_000
    with pytest.raises(OverBudget) as over:
        decode_image(png, budget=budget)
    assert not isinstance(over.value, errors.ApiError)  # fails the request, not one image
    assert (over.value.error.status, over.value.error.code) == (413, "over_budget")
    assert "12000 pixels" in over.value.error.message and "MAX_REQUEST_PIXELS" in over.value.error.message
    # Charged before the pixels are read: a decompression bomb within the per-image
    # limit costs the budget, not the decode.
    with pytest.raises(OverBudget):
        decode_image(huge_pixels_png(), max_pixels=10**9, budget=PixelBudget(1000))
