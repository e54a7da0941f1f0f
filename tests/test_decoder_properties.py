"""The decoder is total: any bytes on any topic become messages or rejections, never an
exception (hypothesis explores random bytes and random JSON trees, deep ones included)."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Decoded, MessageDecoder

TOPICS = [
    "fleet/couriers/c-1/location",
    "fleet/vehicles/v-1/location",
    "fleet/couriers/c-1/presence",
    "fleet/couriers/c-1/emergency",
    "fleet/couriers/c-1/deliveries/o-1/status",
    "owntracks/c-1/phone",
    "owntracks/c-1/phone/event",
    "fleet/orders/o-1/status",
    "fleet/no/such/topic",
]
DECODER = MessageDecoder()
NOW = time.time()

scalars = st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text()
json_trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["lat", "lon", "ts", "tst", "_type", "status", "state", "message", "x"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


def check(decoded: Decoded) -> None:
    assert isinstance(decoded, Decoded)
    if decoded.server_topic:
        return
    # Either something usable, or a reason for every refusal: never a silent nothing.
    assert decoded.fixes or decoded.events or decoded.rejections
    for rejection in decoded.rejections:
        assert rejection.reason


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=2048))
def test_random_bytes_never_raise(topic: str, payload: bytes) -> None:
    check(DECODER.decode(topic, payload, received_at=NOW))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), tree=json_trees)
def test_random_json_trees_never_raise(topic: str, tree: Any) -> None:
    payload = json.dumps(tree, allow_nan=True).encode()
    check(DECODER.decode(topic, payload, received_at=NOW))


@settings(max_examples=60, deadline=None)
@given(
    topic=st.sampled_from(TOPICS),
    depth=st.integers(min_value=1, max_value=100_000),
    opener=st.sampled_from(["[", '{"x":', '{"ts":1795000000,"lat":1,"lon":2,"x":']),
)
def test_any_nesting_depth_is_decided(topic: str, depth: int, opener: str) -> None:
    closer = {"[": "]", '{"x":': "}"}.get(opener, "}")
    payload = (opener * depth + "1" + closer * depth).encode()
    decoded = DECODER.decode(topic, payload, received_at=NOW)
    check(decoded)
    if depth > 64 and not decoded.server_topic:
        assert [r.code for r in decoded.rejections] in (["too_deep"], ["too_large"], ["bad_topic"])
