"""Free TCP ports for tests that run real servers (hubs on tcp, brokers, Home Assistant, Wyoming)."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_base(count: int = 4) -> int:
    """A port P with P … P+count-1 all free on every interface (a tcp hub binds four in a row).

    Chosen below Linux's ephemeral range (32768+), where outgoing connections never take them.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free TCP ports between 20000 and 32000")
