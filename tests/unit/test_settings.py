from serve_app.config.settings import Sam2Config, Settings


def test_defaults_when_nothing_is_set(monkeypatch):
    for name in ("ALLOWED_ORIGINS", "URL_FETCH_ALLOWLIST", "MAX_IMAGE_BYTES", "SAM2_URL", "REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert s.allowed_origins == () and s.url_allowlist == ()
    assert Sam2Config.from_env().url == ""  # SAM2 settings live in their own model: no URL, polygon masks
    assert s.max_image_bytes == 20 * 1024 * 1024 and s.request_timeout_s == 180.0


def test_lists_and_numbers_are_parsed(monkeypatch):
    monkeypatch.setenv("ALLOWED_ORIGINS", " https://a.example, https://b.example ,")
    monkeypatch.setenv("MAX_IMAGES_PER_REQUEST", "7")
    monkeypatch.setenv("ALLOWED_IMAGE_FORMATS", "png, jpeg")
    s = Settings.from_env()
    assert s.allowed_origins == ("https://a.example", "https://b.example")
    assert s.max_images_per_request == 7 and s.allowed_formats == ("PNG", "JPEG")
