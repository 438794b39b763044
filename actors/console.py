"""The live web console of a run: a small ASGI app (Starlette on uvicorn, both shipped with
``ray[serve]``) in a thread of the driver.

It keeps no books: every request asks the coordinator actor for its typed snapshot
(``CoordinatorActor.console_snapshot``), so the page shows the numbers the run's summary
will show, for a replay, a paper or a live run alike. The kill-switch button goes through the
coordinator to the same switches as ``sapphire kill-switch``. Like Ray's and Jupyter's
consoles it listens on loopback unless configured otherwise, and every request must carry the
run's token (``?token=`` on the page's URL, then ``Authorization: Bearer`` from the page).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import os
import secrets
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sapphire.config.ops import LOOPBACK_HOSTS
from sapphire.config.system import ConfigError, ConsoleConfig, check_run_id

log = logging.getLogger(__name__)

TOKEN_ENV = "SAPPHIRE_CONSOLE_TOKEN"
CALL_TIMEOUT_S = 10.0
# the page holds a kill-switch button: no other site may frame it (clickjacking), and its
# token-bearing URL is not sent on as a Referer when a link is followed
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


class KillRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    action: str
    reason: str = ""


def console_token() -> str:
    """``$SAPPHIRE_CONSOLE_TOKEN`` when set (a deployment that hands it out itself), else a
    fresh one per run."""
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)


def page_html(poll_ms: int, dashboard_url: str) -> str:
    page = resources.files("sapphire.console").joinpath("console.html").read_text("utf-8")
    # JSON inside <script>: no "<" may end the element early
    config = json.dumps({"poll_ms": poll_ms, "dashboard_url": dashboard_url}).replace(
        "<", "\\u003c"
    )
    return page.replace("__CONFIG__", config)


def ray_dashboard_url() -> str:
    """The Ray dashboard of the cluster this driver is on ("" when it is not running)."""
    url = os.environ.get("RAY_OVERRIDE_DASHBOARD_URL", "")
    if not url:
        # ray.init()'s address_info["webui_url"], for a driver that did not keep its context
        from ray._private import worker as ray_worker

        url = str(getattr(getattr(ray_worker, "_global_node", None), "webui_url", "") or "")
    if url and not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


async def _result(ref: Any) -> Any:
    # ObjectRef.future() is a concurrent future: safe to await from this server's own loop
    return await asyncio.wait_for(asyncio.wrap_future(ref.future()), CALL_TIMEOUT_S)


class ConsoleServer:
    """The console of one run, served from a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        coordinator: Any,
        config: ConsoleConfig,
        *,
        token: str,
        dashboard_url: str = "",
        store_root: Path | None = None,
        reports_dir: Path | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.config = config
        self.token = token
        self.store_root = store_root
        self.reports_dir = reports_dir
        self._page = page_html(config.poll_ms, dashboard_url)
        self.app = Starlette(
            routes=[
                Route("/", self._index),
                Route("/api/state", self._state),
                Route("/api/kill-switch", self._kill_switch, methods=["POST"]),
                Route("/runs", self._runs),
                Route("/runs/{run_id}", self._run_report),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/?token={quote(self.token, safe='')}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind (``port: 0``: a free port), serve from a thread, and return the URL."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"console: cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
            ) from None
        self.port = int(sock.getsockname()[1])
        if self.config.host not in LOOPBACK_HOSTS:
            log.warning(
                "the console listens beyond this machine (%s:%d): anyone with its token can "
                "trip the kill switch",
                self.config.host,
                self.port,
            )
        server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sapphire-console", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError(f"console did not start on {self.config.host}:{self.port}")
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- requests ---------------------------------------------------------------------------
    def _refused(self, request: Request) -> Response | None:
        """401 without a token, 403 with a wrong one; None when the request may go on."""
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            return Response(
                "401: this console needs its token (the URL the run printed)",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return Response("403: wrong console token", status_code=403)
        return None

    async def _index(self, request: Request) -> Response:
        return self._refused(request) or HTMLResponse(self._page, headers=PAGE_HEADERS)

    async def _state(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            snapshot = await _result(self.coordinator.console_snapshot.remote())
        except Exception as exc:  # the coordinator is restarting or the run has ended
            return Response(f"coordinator unavailable: {type(exc).__name__}", status_code=503)
        return Response(
            msgspec.json.encode(snapshot),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _kill_switch(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            command = msgspec.json.decode(await request.body(), type=KillRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Response(f"400: {exc}", status_code=400)
        if command.action not in ("trip", "reset"):
            return Response("400: action must be trip or reset", status_code=400)
        if command.action == "reset" and not command.reason.strip():
            return Response("400: a reset needs a reason (it is stored)", status_code=400)
        client = request.client.host if request.client else "?"
        by = f"console@{client}"
        try:
            view = await _result(
                self.coordinator.console_kill_switch.remote(
                    command.action, command.reason.strip(), by
                )
            )
        except Exception as exc:
            log.error("console kill switch %s failed: %s", command.action, exc)
            return Response(f"kill switch {command.action} failed: {exc}"[:500], status_code=502)
        log.warning("kill switch %s from the console (%s): %s", command.action, by, command.reason)
        return Response(msgspec.json.encode(view), media_type="application/json")

    async def _runs(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        token = html.escape(quote(self.token, safe=""))
        if self.store_root is None:
            body = (
                "<p>This run's store is not a Parquet folder: use <code>sapphire report</code>.</p>"
            )
        else:
            runs = await asyncio.to_thread(stored_runs, self.store_root)
            items = "".join(
                f"<li><a href='runs/{html.escape(r)}?token={token}'>{html.escape(r)}</a></li>"
                for r in runs
            )
            body = (
                f"<p>Store: <code>{html.escape(str(self.store_root))}</code></p>"
                f"<ul>{items or '<li>none yet</li>'}</ul>"
            )
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>Stored runs</title>"
            f"</head><body><h1>Stored runs</h1><p><a href='./?token={token}'>console</a></p>"
            f"{body}</body></html>",
            headers=PAGE_HEADERS,
        )

    async def _run_report(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self.store_root is None or self.reports_dir is None:
            return Response("404: no Parquet store", status_code=404)
        try:
            run_id = check_run_id(request.path_params["run_id"])
        except ConfigError as exc:
            return Response(f"400: {exc}", status_code=400)
        try:
            page = await asyncio.to_thread(_report, self.store_root, run_id, self.reports_dir)
        except Exception as exc:  # not in the store, or a store it cannot read
            return Response(f"404: run {run_id}: {exc}"[:500], status_code=404)
        return HTMLResponse(page, headers=PAGE_HEADERS)


def stored_runs(store_root: Path) -> list[str]:
    """Run ids with rows in the store (each table is read on its own: a run that never
    traded has ticks but no fills)."""
    from sapphire.storage.query import list_runs

    found: set[str] = set()
    for table in ("pnl", "orders", "ticks"):
        try:
            found.update(list_runs(store_root, table))
        except Exception:  # a table not written yet
            continue
    return sorted(found)


def _report(store_root: Path, run_id: str, reports_dir: Path) -> str:
    """The page ``sapphire report RUN_ID --root STORE`` writes: the instruments and the firm's
    currency the run recorded beside the store, read as that command reads them (without
    them a run whose config named its currency was reported in the rule's, and its prices
    in ticks)."""
    from sapphire.cli.query_cmd import read_run_instruments
    from sapphire.research.run_report import write_run_report

    recorded = read_run_instruments(store_root.resolve().parent / run_id)
    report = write_run_report(
        store_root,
        run_id,
        reports_dir,
        recorded.by_symbol() or None,
        float(recorded.capital) if recorded.capital else None,
        recorded.agents or None,  # the idle agents too
        currency=recorded.currency,
    )
    return report.html.read_text("utf-8")
