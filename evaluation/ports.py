"""Free TCP ports for the real servers that tests and benchmarks start (hubs on tcp, brokers, Home Assistant,
Wyoming and ESPHome servers, the console, the MCP server).

The one helper for this: tests and benchmarks import it from here (benchmarks may not import ``tests/``).
A port is free when it was chosen; another process can still take it before the server binds it, so a
caller that needs several asks for them together (``free_ports``), which holds them open until all are
chosen and so never hands out one port twice.
"""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on now (held open together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_tcp_base(count: int = 4, host: str = "0.0.0.0") -> int:
    """A port P with P … P+count-1 all free on ``host`` (a tcp hub binds its address and the next three).

    Chosen below Linux's ephemeral range (32768+), where outgoing connections never take them.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free TCP ports between 20000 and 32000")
