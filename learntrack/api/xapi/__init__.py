"""The Learning Record Store (xAPI 1.0.3 and 2.0) served by ``learntrack api``.

Runs in the API process. :func:`install` adds it to the query service's app: the
middleware (version header, alternate syntax), the error handlers (400 with a
reason on ``/xAPI/`` paths), the service (:class:`service.LrsService`, in
``app.state.lrs``) and the routes: :mod:`statements` and :mod:`resources`. See
``docs/xapi.md``.
"""

from __future__ import annotations

from fastapi import FastAPI

from learntrack.api.service import QueryService
from learntrack.api.xapi import common, resources, statements
from learntrack.api.xapi.service import LrsService
from learntrack.config import Settings

__all__ = ["LrsService", "install"]


def install(app: FastAPI, settings: Settings, queries: QueryService) -> None:
    """Serve the LRS under ``/xAPI/`` on ``app`` (once, when the app is built).

    Call it after every other middleware is added: its middleware must be the
    outermost, so every answer under ``/xAPI/`` carries the version header.
    """
    app.state.lrs = LrsService(settings, queries)
    common.install(app)
    app.include_router(statements.router)
    app.include_router(resources.router)
    app.add_middleware(common.XapiMiddleware, max_bytes=settings.api.max_body_bytes)
