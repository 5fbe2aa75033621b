"""A free TCP port on the loopback interface, for a server started on this machine
(Serve's proxy, a stand-in service, a metrics endpoint). The tests and the benchmarks
both start such servers; this installed package is what both already import, and
neither imports the other."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now. It is free when asked for, not reserved: start the
    server soon after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
