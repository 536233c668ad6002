"""Routes of the web UI: the pages, their static assets and the JSON they read.

Pages are one HTML shell (``index.html``) that names the page and the prefix the browser sees;
the JavaScript under ``static/`` renders the page from the Prometheus/Thanos HTTP API.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from aiohttp import web

# The querier's pages: path and nav bar title.
QUERY_PAGES = (("graph", "Query"), ("alerts", "Alerts"), ("rules", "Rules"), ("stores", "Stores"),
               ("status", "Status"), ("flags", "Flags"))
STATIC_DIR = Path(str(resources.files(__package__) / "static"))
# The pages run only their own scripts and talk only to this server, whatever a label holds.
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class WebUI:
    """The UI's routes. ``endpoints`` returns the querier's endpoint states when called;
    ``prefix`` is the path the browser sees in front of every route (--web.external-prefix)."""

    prefix: str = ""
    pages: tuple[tuple[str, str], ...] = QUERY_PAGES   # the first is where / leads
    version: str = ""

    def __post_init__(self) -> None:
        nav = "\n".join(f'  <a href="{{{{PREFIX}}}}/{p}" data-nav="{p}">{html.escape(t)}</a>'
                        for p, t in self.pages)
        self._shell = (STATIC_DIR / "index.html").read_text().replace("{{NAV}}", nav)
        self.home = self.pages[0][0]

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root)
        for page, _ in self.pages:
            r.add_get(f"/{page}", self.page)
        r.add_static("/static", STATIC_DIR, append_version=False)

    def register_redirects(self, app: web.Application, route_prefix: str) -> None:
        """With a route prefix, ``/`` and the bare prefix lead to the query page (as Thanos)."""
        app.router.add_get("/", self.root)
        app.router.add_get(route_prefix, self.root)

    async def root(self, _: web.Request) -> web.Response:
        raise web.HTTPFound(f"{self.prefix}/{self.home}")

    async def page(self, request: web.Request) -> web.Response:
        name = request.path.rstrip("/").rsplit("/", 1)[-1]
        body = (self._shell.replace("{{PREFIX}}", html.escape(self.prefix))
                .replace("{{PAGE}}", name).replace("{{HOME}}", self.home)
                .replace("{{VERSION}}", html.escape(self.version)))
        return web.Response(text=body, content_type="text/html",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})
