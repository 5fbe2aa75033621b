"""Server-side fetching of a client's `image_url`, treating the URL as hostile (SSRF).

Per hop (the first URL and every redirect):
  * http/https only, no credentials in the URL;
  * the host is resolved here and *every* address it resolves to must be public:
    loopback, private, link-local, multicast, reserved, unspecified and other
    non-global addresses are refused, unless the host name or the address is on the
    operator's allow-list (URL_FETCH_ALLOWLIST: host names, IPs or CIDRs);
  * the connection goes to the address that was checked (Host header and TLS SNI
    keep the name), so a second DNS answer cannot swap in another address;
  * redirects are followed by hand, at most URL_FETCH_MAX_REDIRECTS of them.
Timeouts: URL_FETCH_CONNECT_TIMEOUT bounds name resolution and each connect;
URL_FETCH_READ_TIMEOUT bounds each read *and* the whole response body, so a server
dripping one byte at a time cannot hold a request open. The body is counted while it
streams and refused past MAX_IMAGE_BYTES. Every refusal is an ApiError naming the
reason; the caller reports it for that image only.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from serve_app import errors
from serve_app.config.settings import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
REDIRECT_CODES = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchPolicy:
    allowlist: tuple[str, ...] = ()
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_redirects: int = 3
    max_bytes: int = 20 * 1024 * 1024

    @staticmethod
    def from_settings() -> FetchPolicy:
        s = settings()
        return FetchPolicy(
            s.url_allowlist, s.url_connect_timeout_s, s.url_read_timeout_s, s.url_max_redirects, s.max_image_bytes
        )


def refused(message: str) -> errors.ApiError:
    return errors.ApiError(400, "url_refused", message)


def fetch_failed(message: str) -> errors.ApiError:
    return errors.ApiError(502, "url_fetch_failed", message)


def address_problem(addr: Address) -> str | None:
    """Why an address may not be fetched from, or None if it is public."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for attr, name in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(addr, attr):
            return name
    if not addr.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return "not globally routable"
    return None


class AllowList:
    """Operator exceptions: exact host names, and IP networks (a bare IP is a /32)."""

    def __init__(self, entries: tuple[str, ...]):
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, addr: Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self.networks)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Built once per process: loading the CA bundle costs more than a small fetch.
    return httpx.create_ssl_context()


class UrlFetcher:
    """`async with UrlFetcher() as f: data = await f.fetch(url)`: one connection pool
    for the URLs of one request."""

    def __init__(self, policy: FetchPolicy | None = None, resolve: Resolver = system_resolve):
        self.policy = policy or FetchPolicy.from_settings()
        self.allow = AllowList(self.policy.allowlist)
        self.resolve = resolve
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> UrlFetcher:
        p = self.policy
        self._client = httpx.AsyncClient(
            # trust_env=False: no proxy from the environment may route around the checks.
            trust_env=False,
            follow_redirects=False,
            verify=_tls_context(),
            timeout=httpx.Timeout(
                connect=p.connect_timeout_s, read=p.read_timeout_s, write=p.read_timeout_s, pool=p.connect_timeout_s
            ),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(self, url: str) -> bytes:
        """The body of `url` (after allowed redirects), or ApiError."""
        if self._client is None:
            raise RuntimeError("use UrlFetcher as an async context manager")
        for _ in range(self.policy.max_redirects + 1):
            target = await self._checked(url)
            location, body = await self._get(url, target)
            if location is None:
                return body
            url = urljoin(url, location)
        raise refused(f"more than {self.policy.max_redirects} redirects")

    async def _checked(self, url: str) -> httpx.URL:
        """The URL rewritten to connect to a checked address of its host."""
        try:
            parsed = httpx.URL(url)
        except Exception:
            raise refused("not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise refused(f"scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https")
        if not parsed.host:
            raise refused("the URL has no host")
        if parsed.userinfo:
            raise refused("credentials in URLs are not accepted")
        host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await self._addresses(host, port)
        if not self.allow.host_allowed(host):
            for addr in addresses:
                problem = address_problem(addr)
                if problem and not self.allow.address_allowed(addr):
                    where = f"{host} resolves to {addr}," if host != str(addr) else f"{addr} is"
                    raise refused(f"{where} a {problem} address (not on the allow-list)")
        return parsed.copy_with(host=str(addresses[0]))

    async def _addresses(self, host: str, port: int) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(self.policy.connect_timeout_s):
                found = await self.resolve(host, port)
        except TimeoutError:
            raise fetch_failed(f"resolving {host} timed out") from None
        except OSError as exc:
            raise fetch_failed(f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses = []
        for raw in found:
            try:
                addresses.append(ipaddress.ip_address(raw.split("%", 1)[0]))  # drop an IPv6 zone
            except ValueError:
                continue
        if not addresses:
            raise fetch_failed(f"{host} has no address")
        return addresses

    async def _get(self, url: str, target: httpx.URL) -> tuple[str | None, bytes]:
        """One hop: (redirect location, b"") or (None, body)."""
        original = httpx.URL(url)
        host_header = original.netloc.decode("ascii").rsplit("@", 1)[-1]
        request = self._client.build_request(
            "GET",
            target,
            headers={
                "Host": host_header,
                "Accept": "image/*",
                # Uncompressed, so the byte cap counts what arrives.
                "Accept-Encoding": "identity",
            },
            # TLS: certificate and SNI checked against the name, not the address.
            extensions={"sni_hostname": original.host} if original.scheme == "https" else {},
        )
        p = self.policy
        try:
            async with asyncio.timeout(p.connect_timeout_s + p.read_timeout_s):
                response = await self._client.send(request, stream=True)
                try:
                    if response.status_code in REDIRECT_CODES:
                        location = response.headers.get("location")
                        if not location:
                            raise fetch_failed(f"HTTP {response.status_code} without a Location")
                        return location, b""
                    if response.status_code != 200:
                        raise fetch_failed(f"the server answered HTTP {response.status_code}")
                    return None, await self._read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            limit = p.connect_timeout_s + p.read_timeout_s
            raise fetch_failed(f"fetching the URL took longer than {limit:g} s") from None
        except httpx.TimeoutException as exc:
            raise fetch_failed(f"the server timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise fetch_failed(f"the fetch failed: {type(exc).__name__}: {exc}") from None

    async def _read_capped(self, response: httpx.Response) -> bytes:
        cap = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise errors.too_large(f"the URL's body is {declared} bytes; the limit is {cap}")
        chunks, total = [], 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > cap:
                raise errors.too_large(f"the URL's body is over the limit of {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
