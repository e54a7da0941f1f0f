"""ingest's fast receive path reads PUBLISH property blocks of Subscription Identifiers
only; checked against paho's own encoding of those blocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt import STANDBY_SUBSCRIPTION_ID, subscription_ids_only


def publish_properties(**values: object) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    packed: bytes = properties.pack()  # type: ignore[no-untyped-call]
    return packed


@given(
    ids=st.lists(st.integers(min_value=1, max_value=268_435_455), min_size=1, max_size=4),
    payload=st.binary(max_size=20),
)
def test_subscription_identifiers_are_read_as_paho_writes_them(
    ids: list[int], payload: bytes
) -> None:
    packet = b"\x00\x01" + publish_properties(SubscriptionIdentifier=ids) + payload
    found = subscription_ids_only(packet, 2, len(packet))
    assert found is not None
    payload_at, standby = found
    assert packet[payload_at:] == payload
    assert standby == (STANDBY_SUBSCRIPTION_ID in ids)


@pytest.mark.parametrize(
    "properties",
    [
        {"MessageExpiryInterval": 60},
        {"SubscriptionIdentifier": [1], "ContentType": "application/json"},
        {"UserProperty": [("a", "b")]},
    ],
)
def test_any_other_property_goes_to_the_full_decoder(properties: dict[str, object]) -> None:
    packet = publish_properties(**properties) + b"{}"
    assert subscription_ids_only(packet, 0, len(packet)) is None


def test_a_block_that_does_not_fit_goes_to_the_full_decoder() -> None:
    packet = publish_properties(SubscriptionIdentifier=[300])
    assert subscription_ids_only(packet, 0, len(packet) - 1) is None
    assert subscription_ids_only(b"\x80\x80\x80\x80\x01", 0, 5) is None


def test_the_standby_shortcut_is_the_block_paho_writes() -> None:
    from ingest.mqtt import STANDBY_ONLY_PROPERTIES

    packed = publish_properties(SubscriptionIdentifier=[STANDBY_SUBSCRIPTION_ID])
    assert packed == STANDBY_ONLY_PROPERTIES
    assert subscription_ids_only(packed, 0, len(packed)) == (3, True)
