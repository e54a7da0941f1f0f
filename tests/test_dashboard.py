"""The bridge's dashboard page in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.bridge_support import fix, mqtt_publish, running_bridge
from tests.services import Services

CHROMIUM = "/usr/bin/chromium"
# No background traffic: this machine has no network beyond the package registries.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_admin_sees_the_fleet_move_on_the_dashboard(
    services: Services, unique: str, tmp_path: Path
) -> None:
    courier, van = f"dash-{unique}", f"van-{unique}"
    with running_bridge(services) as bridge, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            page.goto(f"http://127.0.0.1:{bridge.port}/")
            page.fill("#token", bridge.token("admin", f"admin-{unique}"))
            page.click("#connect")
            page.wait_for_function(
                "document.getElementById('state').textContent.startsWith('admin')", timeout=15_000
            )
            deadline = time.monotonic() + 20
            seen = False
            while not seen and time.monotonic() < deadline:
                mqtt_publish(services, f"fleet/couriers/{courier}/location", fix(52.52, 13.40))
                mqtt_publish(services, f"fleet/vehicles/{van}/location", fix(52.50, 13.45))
                time.sleep(0.5)
                seen = bool(
                    page.evaluate(
                        "(ids) => ids.every((id) => [...sources.keys()].includes(id))",
                        [f"courier:{courier}", f"vehicle:{van}"],
                    )
                )
            assert seen, page.text_content("#state")
            assert int(page.text_content("#source-count") or "0") >= 2
            # The token never appears in the page's address.
            assert "token" not in page.url
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 5_000
            if artifacts := os.environ.get("FLEETPULSE_TEST_ARTIFACTS"):
                shutil.copy(shot, Path(artifacts) / "dashboard.png")
        finally:
            browser.close()
