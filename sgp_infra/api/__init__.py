"""The SGP v4/v5 catalogue API service (``create_app``); see ``app.py``."""

from .app import create_app

__all__ = ["create_app"]
