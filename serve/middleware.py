"""The ingress's ASGI middleware, plain ASGI (Starlette's BaseHTTPMiddleware costs a task and a stream per
request):

- ``BodyLimit``: 413 for a request body over the limit, by its Content-Length or, without one (chunked),
  by reading at most limit + 1 bytes;
- ``ReplicaHeader``: ``x-q2rec-replica`` names the ingress replica that answered.

Their settings are this module's, set by the ingress constructor through ``configure``: Serve runs a frozen
copy of the FastAPI app, so ``app.state`` written in the constructor never reaches the app that serves. Each
replica is its own process, so module state is per replica.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

DEFAULT_LIMIT = 64 * 1024
_settings = {"max_body_bytes": DEFAULT_LIMIT, "replica": b"", "api_docs": True}


def configure(max_body_bytes: int, replica: str, api_docs: bool = True) -> None:
    _settings.update(max_body_bytes=max_body_bytes, replica=replica.encode(), api_docs=api_docs)


def settings() -> dict:
    """This replica's settings, as ``configure`` set them."""
    return dict(_settings)


class BodyLimit:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = _settings["max_body_bytes"]
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


class ReplicaHeader:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-q2rec-replica", _settings["replica"])]
            await send(message)

        await self.app(scope, receive, tagged)
