from __future__ import annotations

from tests.api.conftest import World


def test_smoke(world: World) -> None:
    order = world.new_order(assign=world.courier_id)
    assert order["status"] == "assigned"
