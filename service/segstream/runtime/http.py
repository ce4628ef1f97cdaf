"""Guards for the worker's HTTP views: what a request must carry and how large it may be."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

#: No view takes a body: anything larger is refused by aiohttp with 413 before it is read.
MAX_REQUEST_BYTES = 16 * 1024
#: A customer_id is at most 128 characters (docs/contracts.md); a longer one is no lookup.
MAX_ID_CHARS = 128

View = Callable[..., Awaitable[Any]]


def bearer_token_guard(token: str) -> Callable[[View], View]:
    """A decorator refusing requests without ``Authorization: Bearer <token>`` (401), and ids
    longer than any customer_id (400). faust forwards a routed request with its headers, so
    the worker that owns the customer checks the same token. An empty token guards nothing
    but the id length."""
    expected = f"Bearer {token}".encode()

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def guarded(web: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if token and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), expected
            ):
                return web.json(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if any(len(str(v)) > MAX_ID_CHARS for v in kwargs.values()):
                return web.json({"error": f"ids are at most {MAX_ID_CHARS} characters"}, status=400)
            return await view(web, request, *args, **kwargs)

        return guarded

    return decorate
