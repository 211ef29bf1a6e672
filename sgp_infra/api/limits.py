"""The client-facing limits of the app, installed in one place.

Which component enforces what (the table is in docs/api.md):

* the app (in every worker): auth at the request head, the body limit
  (``guard.RequestGuard``, added here), no slash-redirects (a redirect would
  echo the client's ``Host`` header back as a ``Location``), and the error
  shape for everything the router answers;
* the connection guard around uvicorn's protocol (``connections``): header
  size, header count, the time to send the head, the connection cap;
* uvicorn itself: the idle keep-alive timeout (``timeout_keep_alive``) and
  socket-level flow control of request bodies.
"""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI

from ..catalog.settings import ApiLimits
from .guard import RequestGuard, open_paths


def install_limits(app: FastAPI, limits: Optional[ApiLimits] = None) -> None:
    """Add the guard to ``app`` and turn off slash redirects.

    Call it before adding middlewares that must see rejected requests too
    (metrics and the access line): a middleware added later wraps these.  ``app.state.limits``
    keeps the limits for other parts of the app (inference reads the body limit).
    """
    limits = limits or ApiLimits()
    app.state.limits = limits
    app.router.redirect_slashes = False
    app.add_middleware(RequestGuard, state=app.state, max_body_bytes=limits.max_body_bytes, open=open_paths(app))
