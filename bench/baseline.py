"""The bare aiohttp baseline: read the body, answer ``{"success": true}``. One process, uvloop.

``python -m bench.baseline --port P``. It routes ``POST /v1/{kind}`` like the router does and
runs with the same server options (no access log), so the ratio router / baseline measures
what the router's own work costs on top of aiohttp.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = b'{"success": true}'


async def handle(request: web.Request) -> web.Response:
    """Read the whole body, answer success."""
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Up."""
    del request
    return web.Response(body=b'{"status": "ok"}', content_type="application/json")


def create_app() -> web.Application:
    """The baseline application."""
    app = web.Application(handler_args={"auto_decompress": False})
    app.router.add_post("/v1/{kind}", handle)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
