"""Safe URL fetching against a real HTTP server on loopback (allow-listed where a test
wants the fetch to go through) and a stand-in DNS resolver for host names."""

import asyncio
import ipaddress

import pytest

from serve_app import errors
from serve_app.web.url_fetch import AllowList, FetchPolicy, UrlFetcher, address_problem
from tests.image_server import ImageServer

CAP = 1_000_000


@pytest.fixture(scope="module")
def server(photos_dir):
    with ImageServer(photos_dir, oversize_bytes=CAP * 2) as s:
        yield s


def fetch(url, allow=("127.0.0.1",), dns=None, **policy):
    """Fetch one URL with a policy; `dns` maps host names to the addresses they resolve to."""

    async def resolve(host, port):
        if dns is None or host not in dns:
            raise OSError(-2, "Name or service not known")
        return dns[host]

    async def go():
        p = FetchPolicy(
            **{
                "allowlist": allow,
                "max_bytes": CAP,
                "connect_timeout_s": 2.0,
                "read_timeout_s": 3.0,
                "max_redirects": 3,
                **policy,
            }
        )
        async with UrlFetcher(p, resolve=resolve) as f:
            return await f.fetch(url)

    return asyncio.run(go())


def refused(url, code="url_refused", match=None, **kw) -> errors.ApiError:
    with pytest.raises(errors.ApiError) as info:
        fetch(url, **kw)
    assert info.value.code == code, info.value
    if match:
        assert match in info.value.message, info.value.message
    return info.value


def test_fetches_an_allow_listed_loopback_image(server, photos_dir):
    name = "lfw_Rob_Lowe_0001.jpg"
    assert fetch(f"{server.base}/img/{name}") == (photos_dir / name).read_bytes()


def test_follows_allowed_redirects(server, photos_dir):
    name = "lfw_Rob_Lowe_0002.jpg"
    url = f"{server.base}/redirect?to=/img/{name}"
    assert fetch(url) == (photos_dir / name).read_bytes()
    assert fetch(f"{server.base}/redirect?status=307&to={server.base}/img/{name}") == (photos_dir / name).read_bytes()


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://10.1.2.3/a.jpg", "private"),
        ("http://192.168.0.10/a.jpg", "private"),
        ("http://172.16.5.4/a.jpg", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://127.0.0.2/a.jpg", "loopback"),
        ("http://[::1]/a.jpg", "loopback"),
        ("http://[::ffff:10.0.0.1]/a.jpg", "private"),
        ("http://0.0.0.0/a.jpg", "unspecified"),
        ("http://224.0.0.1/a.jpg", "multicast"),
        ("http://240.0.0.1/a.jpg", "reserved"),
        ("http://100.64.0.1/a.jpg", "not globally routable"),
        ("http://[fe80::1]/a.jpg", "link-local"),
        ("http://[fc00::1]/a.jpg", "private"),
    ],
)
def test_refuses_non_public_addresses(url, problem):
    refused(url, match=problem)


def test_loopback_needs_the_allow_list(server):
    refused(f"{server.base}/img/lfw_Rob_Lowe_0001.jpg", allow=(), match="loopback")


@pytest.mark.parametrize(
    "url, match",
    [
        ("ftp://example.com/a.jpg", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("http:///nohost", "host"),
        ("http://user:secret@example.com/a.jpg", "credentials"),
        ("not a url at all", "scheme"),
    ],
)
def test_refuses_bad_urls(url, match):
    refused(url, match=match)


def test_host_names_are_checked_by_what_they_resolve_to(server):
    # A public-looking name that resolves to a private address (SSRF by DNS).
    refused("http://images.example.com/a.jpg", dns={"images.example.com": ["10.0.0.7"]}, match="10.0.0.7")
    # One bad address among good ones is enough to refuse.
    refused(
        "http://mixed.example.com/a.jpg",
        dns={"mixed.example.com": ["93.184.216.34", "127.0.0.1"]},
        allow=(),
        match="loopback",
    )


def test_an_allow_listed_name_connects_to_the_checked_address(server):
    # The connection goes to the resolved address; the Host header keeps the name.
    body = fetch(
        f"http://images.internal:{server.port}/echo-host",
        allow=("images.internal",),
        dns={"images.internal": ["127.0.0.1"]},
    )
    assert body == f"images.internal:{server.port}".encode()


def test_unresolvable_host_is_a_fetch_failure():
    refused("http://no-such-host.invalid/a.jpg", code="url_fetch_failed", match="cannot resolve")


def test_redirect_to_a_refused_address_is_refused(server):
    refused(f"{server.base}/redirect?to=http://10.0.0.1/a.jpg", match="private")
    refused(f"{server.base}/redirect?to=http://127.0.0.2:{server.port}/img/x.jpg", match="loopback")
    refused(f"{server.base}/redirect?to=file:///etc/passwd", match="scheme")


def test_redirect_limit(server):
    hop = f"{server.base}/img/lfw_Rob_Lowe_0001.jpg"
    for _ in range(4):
        hop = f"{server.base}/redirect?to={hop}"
    refused(hop, match="more than 3 redirects")
    assert fetch(hop, max_redirects=4)  # the same chain within a larger limit


def test_oversize_bodies_are_cut_off(server):
    err = refused(f"{server.base}/big", code="too_large", match="limit")
    assert err.status == 413
    # No Content-Length: counted while streaming.
    refused(f"{server.base}/endless", code="too_large", match="over the limit")


def test_http_errors_are_fetch_failures(server):
    refused(f"{server.base}/status/404", code="url_fetch_failed", match="HTTP 404")
    refused(f"{server.base}/redirect?to=", code="url_fetch_failed", match="without a Location")


def test_a_dripping_server_cannot_hold_the_fetch(server):
    # Each byte arrives well within the read timeout; the whole body must not.
    refused(
        f"{server.base}/drip?seconds=10&every=0.1",
        code="url_fetch_failed",
        match="longer than",
        read_timeout_s=1.0,
        connect_timeout_s=0.5,
    )


def test_non_image_bodies_are_returned_for_the_decoder_to_refuse(server):
    assert fetch(f"{server.base}/bytes?hex=68656c6c6f") == b"hello"


def test_address_rules():
    assert address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111")) is None
    allow = AllowList(("10.0.0.0/8", "Images.Internal.", "::1"))
    assert allow.address_allowed(ipaddress.ip_address("10.2.3.4"))
    assert not allow.address_allowed(ipaddress.ip_address("11.2.3.4"))
    assert allow.address_allowed(ipaddress.ip_address("::1"))
    assert allow.host_allowed("images.internal") and not allow.host_allowed("evil.internal")
