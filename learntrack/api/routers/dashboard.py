"""The ``/dashboard`` page of the query service: the Grafana panels without Grafana.

Runs in the API process (included by :func:`learntrack.api.app.create_app`). Serves
a static page (``learntrack/api/static/``), its script and styles, Plotly's own
``plotly.min.js`` from the installed ``plotly`` package (nothing is loaded from a
CDN), and the panel list of :mod:`learntrack.dashboards` as JSON, so the page
draws exactly the panels of the Grafana dashboard. None of these routes needs a
key: they hold no data. The page asks the API's endpoints with the read key, which
the user gives in the URL fragment (``/dashboard#key=...``, never sent to a server)
or in a form; the page keeps it in the tab's sessionStorage. A Content Security
Policy lets the page talk to its own origin only.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from learntrack.dashboards import page_spec

#: The page's own files (``learntrack/api/static/``).
STATIC = Path(__file__).parent.parent / "static"
#: Only these files are served from /dashboard/static/ (no path walking).
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "plotly.min.js": "text/javascript",
}
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@cache
def plotly_bundle() -> Path:
    """Path of the ``plotly.min.js`` that ships inside the plotly package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        msg = "the plotly package is not installed (it ships the dashboard's charts)"
        raise RuntimeError(msg)
    bundle = Path(next(iter(spec.submodule_search_locations)))
    return bundle / "package_data" / "plotly.min.js"


router = APIRouter(include_in_schema=False)
_PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}


@router.get("/dashboard")
def page() -> FileResponse:
    """The page itself, under its Content Security Policy."""
    return FileResponse(STATIC / "dashboard.html", headers=_PAGE_HEADERS)


@router.get("/dashboard/panels.json")
def panels() -> JSONResponse:
    """The panels to draw: those of the Grafana dashboard."""
    return JSONResponse(page_spec(), headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/static/{name}")
def asset(name: str) -> FileResponse:
    """One of :data:`ASSETS` (404 for any other name)."""
    media = ASSETS.get(name)
    if media is None:
        raise HTTPException(404, f"no asset {name!r}")
    path = plotly_bundle() if name == "plotly.min.js" else STATIC / name
    # The Plotly bundle changes only with the package version: cache it a day.
    cache_control = "max-age=86400" if name == "plotly.min.js" else "no-cache"
    return FileResponse(
        path, media_type=media, headers={"Cache-Control": cache_control}
    )
