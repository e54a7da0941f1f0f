"""The REST API (FastAPI): orders, assignment, the delivery workflow, ETA, positions,
alerts, analytics and device credentials. `python -m api` serves it."""

from api.app import create_app

__all__ = ["create_app"]
