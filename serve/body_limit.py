"""413 for a request body over the app's limit (``app.state.max_body_bytes``, set by the ingress from
its config): by its Content-Length, or, without one (chunked), by reading at most limit + 1 bytes. Plain
ASGI: Starlette's BaseHTTPMiddleware costs a task and a stream per request."""

from __future__ import annotations

from fastapi.responses import JSONResponse

DEFAULT_LIMIT = 64 * 1024


class BodyLimit:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = (
            getattr(scope["app"].state, "max_body_bytes", DEFAULT_LIMIT) if "app" in scope else DEFAULT_LIMIT
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await self._reject(length.decode(errors="replace"), limit, scope, receive, send)
            return await self.app(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:  # chunked upload: buffer up to the limit, then replay
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await self._reject(f"over {size}", limit, scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reject(length: str, limit: int, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"body of {length} bytes is over the limit of {limit}"}, 413)
        await response(scope, receive, send)
