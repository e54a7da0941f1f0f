"""The one-line live status of a running demo, read from the processes' Prometheus pages."""

from __future__ import annotations

import httpx


def metric_sum(text: str, name: str, label: str = "") -> float | None:
    """Sum of every sample of `name` (optionally only those whose labels contain `label`)."""
    total: float | None = None
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        rest = series[len(name) :]
        if rest and not rest.startswith("{"):
            continue
        if label and label not in rest:
            continue
        try:
            total = (total or 0.0) + float(value)
        except ValueError:
            continue
    return total


async def scrape(http: httpx.AsyncClient, url: str) -> str:
    try:
        response = await http.get(url, timeout=2.0)
    except httpx.TransportError:
        return ""
    return response.text if response.status_code == 200 else ""


class StatusLine:
    """Fixes stored per second since the last call, sockets open, orders by state."""

    def __init__(self, *, ingest_metrics_url: str, bridge_metrics_url: str) -> None:
        self._ingest = ingest_metrics_url
        self._bridge = bridge_metrics_url
        self._last_stored: float | None = None
        self._last_time: float | None = None

    async def render(self, http: httpx.AsyncClient, *, now: float, orders: dict[str, int]) -> str:
        stored = metric_sum(
            await scrape(http, self._ingest),
            "fleetpulse_ingest_rows_stored_total",
            'table="positions"',
        )
        bridge_page = await scrape(http, self._bridge)
        sockets = metric_sum(bridge_page, "bridge_connections")
        if sockets is None and bridge_page:
            sockets = 0.0
        rate = "?"
        if stored is not None and self._last_stored is not None and self._last_time is not None:
            rate = f"{(stored - self._last_stored) / max(1e-6, now - self._last_time):.1f}"
        if stored is not None:
            self._last_stored, self._last_time = stored, now
        by_state = (
            " ".join(f"{state}={count}" for state, count in orders.items() if count) or "none yet"
        )
        sockets_text = "?" if sockets is None else f"{sockets:.0f}"
        total = "?" if stored is None else f"{stored:.0f}"
        return (
            f"fixes/s stored={rate} (total {total})  sockets open={sockets_text}"
            f"  orders: {by_state}"
        )
