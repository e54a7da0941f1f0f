"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.statuses import Status
from protocol.topics import ID_PATTERN
from store.presence import Availability

# The alphabet of topic levels (protocol.topics): every id the API accepts may be published.
EntityId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=f"^{ID_PATTERN.pattern}$", examples=["c-42"])
]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Note = Annotated[str, Field(max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RestaurantIn(Strict):
    id: EntityId
    name: Name
    lat: Latitude
    lon: Longitude


class RestaurantPatch(Strict):
    name: Name | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Restaurant(BaseModel):
    id: str
    name: str
    lat: float
    lon: float
    created_at: datetime


class CourierIn(Strict):
    id: EntityId
    name: Name
    phone: Annotated[str, Field(max_length=40)] | None = None


class CourierPatch(Strict):
    name: Name | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None


class Courier(BaseModel):
    id: str
    name: str
    phone: str | None
    created_at: datetime
    availability: Availability
    last_seen: datetime | None


class VehicleIn(Strict):
    id: EntityId
    label: Name
    courier_id: EntityId | None = None


class VehiclePatch(Strict):
    label: Name | None = None
    courier_id: EntityId | None = None


class Vehicle(BaseModel):
    id: str
    label: str
    courier_id: str | None
    created_at: datetime


class DeviceIn(Strict):
    owner_kind: Literal["courier", "vehicle"]
    owner_id: EntityId


class Device(BaseModel):
    username: str
    owner_kind: Literal["courier", "vehicle"]
    owner_id: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


class DeviceList(BaseModel):
    items: list[Device]


class DeviceCredentials(BaseModel):
    """Returned once, when created or rotated: the password is not kept in plain text."""

    username: str
    password: str
    client_id: str
    owner_kind: Literal["courier", "vehicle"]
    owner_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls_port: int
    publish_topics: list[str]
    subscribe_topics: list[str]


class Point(Strict):
    lat: Latitude
    lon: Longitude


class OrderIn(Strict):
    id: EntityId
    restaurant_id: EntityId
    customer_uid: Annotated[str, Field(min_length=1, max_length=128)]
    pickup: Point
    dropoff: Point
    promised_at: datetime


class Order(BaseModel):
    id: str
    restaurant_id: str
    customer_uid: str
    pickup: Point
    dropoff: Point
    promised_at: datetime
    status: Status
    courier_id: str | None
    eta: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    allowed_next: list[Status]


class OrderList(BaseModel):
    items: list[Order]


class AssignmentIn(Strict):
    courier_id: EntityId


class StatusIn(Strict):
    status: Status
    note: Note = ""


class BatchStatusItem(Strict):
    order_id: EntityId
    status: Status
    note: Note = ""


class BatchStatusIn(Strict):
    items: Annotated[list[BatchStatusItem], Field(min_length=1, max_length=500)]


class BatchStatusResult(BaseModel):
    order_id: str
    http_status: int
    outcome: Literal["applied", "repeat", "rejected", "not_found", "forbidden"]
    status: Status | None = None
    message: str = ""
    allowed: list[Status] | None = None


class BatchStatusOut(BaseModel):
    results: list[BatchStatusResult]


class OrderEvent(BaseModel):
    time: datetime
    kind: str
    source_kind: str
    source_id: str
    payload: dict[str, object]


class OrderEventList(BaseModel):
    items: list[OrderEvent]


class LastPosition(BaseModel):
    source_kind: Literal["courier", "vehicle"]
    source_id: str
    ts: datetime
    lat: float
    lon: float
    speed: float | None
    heading: float | None
    battery: float | None


class LastPositions(BaseModel):
    count: int
    items: list[LastPosition]


class LastPositionsColumns(BaseModel):
    """`layout=columns`: element i of every array belongs to the same source."""

    count: int
    source_kind: list[Literal["courier", "vehicle"]]
    source_id: list[str]
    ts: list[datetime]
    lat: list[float]
    lon: list[float]
    speed: list[float | None]
    heading: list[float | None]
    battery: list[float | None]


class TrackPoint(BaseModel):
    ts: datetime
    lat: float
    lon: float
    speed: float | None
    fixes: int


class Track(BaseModel):
    courier_id: str
    start: datetime
    end: datetime
    resolution_s: int
    points: list[TrackPoint]


class GeoJsonGeometry(BaseModel):
    type: Literal["LineString"]
    coordinates: list[list[float]]


class GeoJsonFeature(BaseModel):
    type: Literal["Feature"]
    geometry: GeoJsonGeometry
    properties: dict[str, object]


class AlertIn(Strict):
    lat: Latitude | None = None
    lon: Longitude | None = None
    message: Note = ""
    courier_id: EntityId | None = None


class Alert(BaseModel):
    id: int
    courier_id: str
    raised_at: datetime
    lat: float | None
    lon: float | None
    message: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class AlertList(BaseModel):
    items: list[Alert]


class FixCount(BaseModel):
    start: datetime
    fixes: int


class Analytics(BaseModel):
    start: datetime
    end: datetime
    couriers_online: int
    couriers_active: int
    orders_by_status: dict[str, int]
    deliveries: int
    avg_delivery_s: float | None
    p90_delivery_s: float | None
    on_time_rate: float | None
    fixes_total: int
    fixes_per_minute: float
    fixes_series_bucket_s: int
    fixes_series: list[FixCount]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
