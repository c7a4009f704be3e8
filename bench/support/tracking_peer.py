"""The benchmark peer: a bare Starlette app whose only route answers 302 (the framework ceiling).

Served by the same uvicorn as ``mailcarrier serve``, it measures what HTTP parsing, the ASGI
server and routing cost before any tracking work. Run: uvicorn --app-dir bench/support tracking_peer:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def redirect(request: Request) -> Response:
    return Response(status_code=302, headers={"Location": "https://shop.example/sale"})


app = Starlette(routes=[Route("/c/{token}", redirect, methods=["GET", "HEAD"])])
