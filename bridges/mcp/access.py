"""Who may call the MCP server over HTTP: loopback without a token, any other address with one.

``check_bind(host, token)`` is the deployment's policy (a server bound off loopback without a token
file does not start); ``BearerAuth`` is the ASGI middleware that enforces a token when there is one:
a request without ``Authorization: Bearer <token>``, or with another token, gets 401 and a JSON
body that says which, before any MCP message is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from pathlib import Path
from typing import Any

Scope = dict[str, Any]


class AccessError(ValueError):
    """The server may not start as configured; the text says why and what to change."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token: the first line of ``path`` (``AccessError`` naming the file when unusable)."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise AccessError(f"[mcp] token_file {p}: {exc.strerror or exc}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise AccessError(f"[mcp] token_file {p}: the first line (the token) must be at least 16 characters")
    return token


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve off loopback without a token."""
    if token is None and not is_loopback(host):
        raise AccessError(
            f"[mcp] host = {host!r} is reachable from other machines: set token_file (a file whose first line is "
            "the bearer token agents must send), or bind to 127.0.0.1"
        )


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        scheme, _, given = header.partition(b" ")
        if not header:
            problem = "missing bearer token: send 'Authorization: Bearer <token>' (the [mcp] token_file's token)"
        elif scheme.lower() != b"bearer":
            problem = "the Authorization header must use the Bearer scheme"
        elif not hmac.compare_digest(given.strip(), self._token):
            problem = "wrong bearer token"
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized", "error_description": problem}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="sensorium"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
