"""Optional API-key authentication and per-key rate limiting, as one ASGI middleware.

Keys come from ``serve.api_keys`` (``SMOKE_SERVE__API_KEYS=k1,k2`` in the
environment). A client sends ``X-API-Key: <key>`` or ``Authorization: Bearer
<key>``. No key is 401 (with ``WWW-Authenticate``), an unknown key 403. Keys are
compared in constant time so response timing does not leak a key's prefix.

``/health`` (load balancers and Serve's own probes) and the API description
(``/openapi.json``, ``/docs``) stay open: they carry no data.

Written as plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: the
latter wraps every response in a stream and costs a measurable share of a
sub-millisecond prediction.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Iterable

import orjson

from serve.rate_limit import RateLimiter, bucket_key

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class ApiGuard:
    """ASGI middleware: authenticate (when keys are set), then rate-limit (when a limit is set)."""

    def __init__(self, app, api_keys: Iterable[str] = (), limiter: RateLimiter | None = None,
                 open_paths: frozenset[str] = OPEN_PATHS, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = [k.encode() for k in api_keys]
        self.limiter = limiter
        self.open_paths = open_paths
        self.trusted_proxies = frozenset(trusted_proxies)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or scope["method"] == "OPTIONS":
            # OPTIONS: CORS preflight requests carry no credentials by design.
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope["headers"])
        if self.keys:
            if key is None:
                await _reject(send, 401, "missing API key: send it in the X-API-Key header",
                              [(b"www-authenticate", b'ApiKey header="X-API-Key"')])
                return
            if not any(hmac.compare_digest(key, k) for k in self.keys):
                logger.warning("rejected request to %s: unknown API key", scope["path"])
                await _reject(send, 403, "API key not accepted")
                return
        if self.limiter is not None:
            # With auth off a presented key proves nothing: the bucket is the client's address.
            client = scope.get("client")
            bucket = bucket_key(key if self.keys else None, client[0] if client else None,
                                _header(scope["headers"], b"x-forwarded-for"), self.trusted_proxies)
            allowed, retry_after = self.limiter.acquire(bucket)
            if not allowed:
                wait = max(1, math.ceil(retry_after))
                await _reject(send, 429, f"rate limit exceeded: retry in {wait} s",
                              [(b"retry-after", str(wait).encode())])
                return
        await self.app(scope, receive, send)


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> str | None:
    values = [value.decode("latin-1") for name, value in headers if name == wanted]
    return ", ".join(values) if values else None


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip() or None
    return None


async def _reject(send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"error": message, "status_code": status})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
