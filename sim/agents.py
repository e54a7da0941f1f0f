"""Couriers and vehicles as pure state machines: `tick` advances one by `dt` seconds and
returns the MQTT messages it would publish. No network in here, so runs are repeatable."""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from sim.geo import CityBox, Point, bearing_deg, distance_m, step_toward, with_gps_noise


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    fixes: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    """One order as the courier sees it."""

    order_id: str
    pickup: Point
    dropoff: Point


class Leg(Enum):
    IDLE = "idle"
    TO_PICKUP = "to_pickup"
    AT_PICKUP = "at_pickup"
    TO_DROPOFF = "to_dropoff"
    AT_DROPOFF = "at_dropoff"


@dataclass(frozen=True, slots=True)
class Realism:
    """How a day on the road looks. Probabilities are per second of simulated time."""

    moving_fix_interval_s: float = 3.0
    stopped_fix_interval_s: float = 15.0
    speed_mps: tuple[float, float] = (3.5, 7.5)
    pickup_wait_s: tuple[float, float] = (20.0, 60.0)
    handover_wait_s: tuple[float, float] = (10.0, 30.0)
    accuracy_m: tuple[float, float] = (3.0, 25.0)
    dead_zone_chance: float = 1 / 400
    dead_zone_s: tuple[float, float] = (15.0, 60.0)
    emergency_chance: float = 0.0


def iso(ts: float) -> float:
    return round(ts, 3)


@dataclass
class Courier:
    courier_id: str
    position: Point
    rng: random.Random
    realism: Realism = field(default_factory=Realism)
    topic_prefix: str = "fleet"
    owntracks: bool = False
    battery: float = 100.0
    jobs: deque[Job] = field(default_factory=deque)
    leg: Leg = Leg.IDLE
    _wait_left: float = 0.0
    _since_fix: float = 1e9
    _speed: float = 0.0
    _heading: float = 0.0
    _dead_zone_left: float = 0.0
    _buffered: list[dict[str, object]] = field(default_factory=list)
    _held: list[Message] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)

    # --- topics -------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"{self.topic_prefix}/couriers/{self.courier_id}"

    @property
    def presence_topic(self) -> str:
        return f"{self.base}/presence"

    @property
    def assignments_topic(self) -> str:
        return f"{self.base}/assignments"

    @property
    def location_topic(self) -> str:
        if self.owntracks:
            return f"owntracks/{self.courier_id}/phone"
        return f"{self.base}/location"

    def will(self, now: float) -> Message:
        """The MQTT will the broker publishes if this phone vanishes."""
        if self.owntracks:
            body: dict[str, object] = {"_type": "lwt", "tst": int(now)}
            return Message(self.location_topic, json.dumps(body).encode(), retain=True)
        return self.presence(now, "offline")

    def presence(self, now: float, state: str) -> Message:
        body = {"state": state, "ts": iso(now)}
        return Message(self.presence_topic, json.dumps(body).encode(), retain=True)

    # --- orders ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def assign(self, job: Job) -> None:
        if all(existing.order_id != job.order_id for existing in self.jobs):
            self.jobs.append(job)

    def unassign(self, order_id: str) -> None:
        if self.jobs and self.jobs[0].order_id == order_id:
            self.leg = Leg.IDLE
        self.jobs = deque(job for job in self.jobs if job.order_id != order_id)

    def _status(self, now: float, job: Job, status: str) -> Message:
        body = {"status": status, "ts": iso(now)}
        topic = f"{self.base}/deliveries/{job.order_id}/status"
        return Message(topic, json.dumps(body).encode())

    # --- the clock ------------------------------------------------------------------------
    def tick(self, now: float, dt: float) -> list[Message]:
        out: list[Message] = []
        self._advance(now, dt, out)
        self.battery = max(5.0, self.battery - dt * 0.0015)
        self._since_fix += dt
        moving = self._speed > 0.5
        interval = (
            self.realism.moving_fix_interval_s if moving else (self.realism.stopped_fix_interval_s)
        )
        if self._since_fix >= interval:
            self._since_fix = 0.0
            self._fix(now, out)
        if self.rng.random() < self.realism.emergency_chance * dt:
            out.append(self._emergency(now))
        return self._through_coverage(dt, out)

    def _advance(self, now: float, dt: float, out: list[Message]) -> None:
        if self.leg is Leg.IDLE:
            self._speed = 0.0
            if self.jobs:
                self.leg = Leg.TO_PICKUP
                self._speed = self.rng.uniform(*self.realism.speed_mps)
            return
        job = self.jobs[0]
        if self.leg in (Leg.TO_PICKUP, Leg.TO_DROPOFF):
            target = job.pickup if self.leg is Leg.TO_PICKUP else job.dropoff
            self._speed = max(1.0, self._speed + self.rng.gauss(0, 0.4))
            self._speed = min(self._speed, self.realism.speed_mps[1] * 1.3)
            self._heading = bearing_deg(self.position, target)
            self.position = step_toward(self.position, target, self._speed * dt)
            if distance_m(self.position, target) < 1.0:
                self._speed = 0.0
                if self.leg is Leg.TO_PICKUP:
                    self.leg = Leg.AT_PICKUP
                    self._wait_left = self.rng.uniform(*self.realism.pickup_wait_s)
                else:
                    self.leg = Leg.AT_DROPOFF
                    self._wait_left = self.rng.uniform(*self.realism.handover_wait_s)
            return
        self._wait_left -= dt
        if self._wait_left > 0:
            return
        if self.leg is Leg.AT_PICKUP:
            out.append(self._status(now, job, "picked_up"))
            out.append(self._status(now + 0.001, job, "out_for_delivery"))
            self.leg = Leg.TO_DROPOFF
            self._speed = self.rng.uniform(*self.realism.speed_mps)
        else:
            out.append(self._status(now, job, "delivered"))
            self.delivered.append(job.order_id)
            self.jobs.popleft()
            self.leg = Leg.IDLE

    def _fix(self, now: float, out: list[Message]) -> None:
        accuracy = self.rng.uniform(*self.realism.accuracy_m)
        seen = with_gps_noise(self.position, accuracy, self.rng)
        if self.owntracks:
            body: dict[str, object] = {
                "_type": "location",
                "lat": round(seen.lat, 7),
                "lon": round(seen.lon, 7),
                "tst": int(now),
                "acc": round(accuracy),
                "alt": 34 + round(self.rng.gauss(0, 2)),
                "vel": round(self._speed * 3.6),
                "cog": round(self._heading) % 360,
                "batt": round(self.battery),
                "conn": "m",
                "t": "t" if self._speed > 0.5 else "p",
                "tid": self.courier_id[-2:],
            }
        else:
            body = {
                "lat": round(seen.lat, 7),
                "lon": round(seen.lon, 7),
                "ts": iso(now),
                "speed": round(self._speed, 2),
                "heading": round(self._heading, 1) % 360,
                "accuracy": round(accuracy, 1),
                "altitude": round(34 + self.rng.gauss(0, 2), 1),
                "battery": round(self.battery, 1),
            }
        if self._dead_zone_left > 0:
            self._buffered.append(body)
        else:
            out.append(Message(self.location_topic, json.dumps(body).encode(), fixes=1))

    def _emergency(self, now: float) -> Message:
        body = {
            "lat": round(self.position.lat, 7),
            "lon": round(self.position.lon, 7),
            "ts": iso(now),
            "message": "simulated emergency: courier pressed the panic button",
        }
        return Message(f"{self.base}/emergency", json.dumps(body).encode())

    def _through_coverage(self, dt: float, out: list[Message]) -> list[Message]:
        """Dead zones: fixes are buffered and uploaded later as one batch, out of order;
        other messages wait in the phone's outbox."""
        if self._dead_zone_left > 0:
            self._dead_zone_left -= dt
            self._held.extend(out)
            if self._dead_zone_left > 0:
                return []
            return self._flush_buffer()
        if self.rng.random() < self.realism.dead_zone_chance * dt:
            self._dead_zone_left = self.rng.uniform(*self.realism.dead_zone_s)
            self._held.extend(out)
            return []
        return out

    def _flush_buffer(self) -> list[Message]:
        fixes, self._buffered = self._buffered, []
        held, self._held = self._held, []
        self.rng.shuffle(fixes)
        out: list[Message] = []
        if fixes and self.owntracks:
            out.extend(
                Message(self.location_topic, json.dumps(fix).encode(), fixes=1) for fix in fixes
            )
        elif fixes:
            out.append(Message(self.location_topic, json.dumps(fixes).encode(), fixes=len(fixes)))
        return out + held


@dataclass
class Vehicle:
    """A tracker in a van that drives between random points of the city."""

    vehicle_id: str
    position: Point
    rng: random.Random
    city: CityBox
    topic_prefix: str = "fleet"
    fix_interval_s: float = 5.0
    _target: Point | None = None
    _since_fix: float = 1e9
    _speed: float = 0.0

    def tick(self, now: float, dt: float) -> list[Message]:
        if self._target is None or distance_m(self.position, self._target) < 1.0:
            self._target = self.city.random_point(self.rng)
            self._speed = self.rng.uniform(6.0, 13.0)
        heading = bearing_deg(self.position, self._target)
        self.position = step_toward(self.position, self._target, self._speed * dt)
        self._since_fix += dt
        if self._since_fix < self.fix_interval_s:
            return []
        self._since_fix = 0.0
        seen = with_gps_noise(self.position, 5.0, self.rng)
        body = {
            "lat": round(seen.lat, 7),
            "lon": round(seen.lon, 7),
            "ts": iso(now),
            "speed": round(self._speed, 2),
            "heading": round(heading, 1) % 360,
            "accuracy": 5.0,
        }
        topic = f"{self.topic_prefix}/vehicles/{self.vehicle_id}/location"
        return [Message(topic, json.dumps(body).encode(), fixes=1)]
