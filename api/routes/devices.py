"""Device MQTT credentials (wired to the broker package's provisioning)."""

from __future__ import annotations

from fastapi import APIRouter

from api.errors import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES, tags=["devices"])
