"""Payload models of the wire contract (msgspec structs) and what decoding produces.

Wire models (``*Payload``, ``OwnTracks*``) are what devices send; publishers build them and
call :func:`encode_payload`. Decoding turns them into :class:`Fix` rows and ``*Event``
records, stamped with the source the topic names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from protocol.statuses import DeliveryStatus
from protocol.topics import SourceKind

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TEXT_LENGTH = 2000

Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90, description="degrees")]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180, description="degrees")]
# Epoch seconds (fractions allowed) or an ISO 8601 / RFC 3339 time with an offset.
Timestamp = float | Annotated[datetime, msgspec.Meta(tz=True)]
Speed = Annotated[float, msgspec.Meta(ge=0, le=1e5, description="m/s")]
Heading = Annotated[float, msgspec.Meta(ge=0, lt=360, description="degrees")]
Accuracy = Annotated[float, msgspec.Meta(ge=0, le=1e7, description="metres")]
Altitude = Annotated[float, msgspec.Meta(ge=-1e5, le=1e7, description="metres")]
Battery = Annotated[float, msgspec.Meta(ge=0, le=100, description="percent")]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)]
# OwnTracks sends negative acc/vel/cog/batt for "unknown"; only the upper bound is checked.
OwnTracksSpeed = Annotated[float, msgspec.Meta(le=3.6e5, description="km/h")]
OwnTracksAccuracy = Annotated[float, msgspec.Meta(le=1e7, description="metres")]
OwnTracksCourse = Annotated[float, msgspec.Meta(le=1e6, description="degrees")]

PresenceState = Literal["online", "offline", "busy"]
GeofenceEventType = Literal["enter", "leave"]


def encode_payload(payload: msgspec.Struct) -> bytes:
    """JSON bytes of a wire model, the way devices and our publishers send it."""
    return msgspec.json.encode(payload)


# --- native wire models --------------------------------------------------------------


class LocationPayload(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One fix on ``{prefix}/couriers|vehicles/{id}/location``; a JSON array of these is a
    batch. Units: speed m/s, heading degrees, accuracy and altitude metres, battery %."""

    lat: Latitude
    lon: Longitude
    ts: Timestamp
    speed: Speed | None = None
    heading: Heading | None = None
    accuracy: Accuracy | None = None
    altitude: Altitude | None = None
    battery: Battery | None = None


class PresencePayload(msgspec.Struct, frozen=True, omit_defaults=True):
    """``{prefix}/couriers/{id}/presence``, retained; a phone's MQTT will carries
    ``offline`` with the time the will was set."""

    state: PresenceState
    ts: Timestamp


class EmergencyPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    """``{prefix}/couriers/{id}/emergency``. Position optional: a phone without a fix can
    still raise the alarm."""

    ts: Timestamp
    lat: Latitude | None = None
    lon: Longitude | None = None
    message: Text = ""


class DeliveryStatusPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    """``{prefix}/couriers/{id}/deliveries/{order_id}/status``: the courier's progress."""

    status: DeliveryStatus
    ts: Timestamp
    note: Text | None = None


# --- OwnTracks wire models (the stock app's JSON; unknown keys are ignored) ----------


class OwnTracksHeader(msgspec.Struct, frozen=True):
    type: str = msgspec.field(name="_type")


class OwnTracksLocation(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """``_type=location``. ``vel`` is km/h; negative acc/vel/cog/batt mean "unknown"."""

    lat: Latitude
    lon: Longitude
    tst: float
    acc: OwnTracksAccuracy | None = None
    alt: Altitude | None = None
    vel: OwnTracksSpeed | None = None
    cog: OwnTracksCourse | None = None
    batt: float | None = None
    tid: str | None = None
    type: str = msgspec.field(name="_type", default="location")


class OwnTracksLwt(msgspec.Struct, frozen=True, omit_defaults=True):
    """``_type=lwt``: the app's will; ``tst`` is when its connection was established."""

    tst: float
    type: str = msgspec.field(name="_type", default="lwt")


class OwnTracksTransition(msgspec.Struct, frozen=True, omit_defaults=True):
    """``_type=transition``: entering or leaving a region (geofence)."""

    event: GeofenceEventType
    tst: float
    lat: Latitude | None = None
    lon: Longitude | None = None
    acc: OwnTracksAccuracy | None = None
    desc: Text | None = None
    rid: Text | None = None
    t: Text | None = None
    wtst: float | None = None
    tid: str | None = None
    type: str = msgspec.field(name="_type", default="transition")


# --- what decoding produces --------------------------------------------------------


class Fix(msgspec.Struct, frozen=True, gc=False):
    """One GPS fix in canonical units, ready to store; (source_kind, source_id, fix_time)
    identifies it, so a redelivered message collides with its first copy."""

    source_kind: SourceKind
    source_id: str
    fix_time: datetime
    lat: float
    lon: float
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None
    altitude: float | None = None
    battery: float | None = None


class PresenceEvent(msgspec.Struct, frozen=True, tag="presence"):
    """A courier went online, offline or busy (an OwnTracks ``lwt`` is ``offline``)."""

    kind: ClassVar[str] = "presence"
    courier_id: str
    state: PresenceState
    time: datetime

    @property
    def dedup_key(self) -> str:
        return f"presence/{self.courier_id}/{self.state}"


class EmergencyEvent(msgspec.Struct, frozen=True, tag="emergency"):
    kind: ClassVar[str] = "emergency"
    courier_id: str
    time: datetime
    lat: float | None = None
    lon: float | None = None
    message: str = ""

    @property
    def dedup_key(self) -> str:
        return f"emergency/{self.courier_id}"


class DeliveryStatusEvent(msgspec.Struct, frozen=True, tag="status"):
    """A courier's report of an order's progress; the order workflow decides if it applies."""

    kind: ClassVar[str] = "status"
    courier_id: str
    order_id: str
    status: DeliveryStatus
    time: datetime
    note: str | None = None

    @property
    def dedup_key(self) -> str:
        return f"status/{self.courier_id}/{self.order_id}/{self.status}"


class GeofenceEvent(msgspec.Struct, frozen=True, tag="geofence"):
    """An OwnTracks region transition."""

    kind: ClassVar[str] = "geofence"
    courier_id: str
    device: str
    event: GeofenceEventType
    time: datetime
    lat: float | None = None
    lon: float | None = None
    accuracy: float | None = None
    region: str | None = None
    region_id: str | None = None
    trigger: str | None = None

    @property
    def dedup_key(self) -> str:
        return (
            f"geofence/{self.courier_id}/{self.device}/{self.event}/{self.region_id or self.region}"
        )


Event = PresenceEvent | EmergencyEvent | DeliveryStatusEvent | GeofenceEvent

RejectionCode = Literal[
    "empty",
    "too_large",
    "too_deep",
    "not_utf8",
    "not_json",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "ts_in_future",
    "ts_too_old",
    "bad_topic",
    "bad_id",
    "unsupported_type",
    "decoder_error",
]


class Rejection(msgspec.Struct, frozen=True):
    """Why a message, or one element of a batch, cannot be stored.

    ``code`` is a short label (for metrics); ``reason`` names the field and says why."""

    code: RejectionCode
    reason: str


class Decoded(msgspec.Struct):
    """Everything one MQTT message turned into. A batch may yield fixes and rejections."""

    fixes: list[Fix] = msgspec.field(default_factory=list)
    events: list[Event] = msgspec.field(default_factory=list)
    rejections: list[Rejection] = msgspec.field(default_factory=list)
    #: The topic is one the servers publish (assignments, order status, alerts): skip it.
    server_topic: bool = False

    @property
    def dead_letter_reason(self) -> str | None:
        """All rejections as one text for the dead-letter row, or None if there are none."""
        if not self.rejections:
            return None
        return "; ".join(f"{r.code}: {r.reason}" for r in self.rejections)
