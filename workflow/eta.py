"""Estimated arrival of an order: remaining straight-line route over recent average speed.

remaining = last position -> pickup -> drop-off while the food is not picked up yet,
            last position -> drop-off afterwards; each leg a great-circle distance, times
            a detour factor for streets that are not straight.
speed     = mean of the speeds the courier reported in the recent window (or, if the device
            reports none, distance covered between consecutive fixes over the time taken),
            clamped to a sane range; the default speed when there are too few fixes.
eta       = time of the last fix + remaining / speed (never before now).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class EtaParameters:
    default_speed_mps: float = 5.0
    min_speed_mps: float = 1.0
    max_speed_mps: float = 40.0
    min_fixes: int = 3
    window_s: float = 600.0
    detour_factor: float = 1.3


@dataclass(frozen=True)
class Fix:
    time: datetime
    lat: float
    lon: float
    speed: float | None


def average_speed(fixes: list[Fix], params: EtaParameters) -> float:
    """The courier's recent average speed in m/s; the default with too little data."""
    if len(fixes) < params.min_fixes:
        return params.default_speed_mps
    reported = [f.speed for f in fixes if f.speed is not None]
    if len(reported) >= params.min_fixes:
        speed = sum(reported) / len(reported)
    else:
        ordered = sorted(fixes, key=lambda f: f.time)
        seconds = (ordered[-1].time - ordered[0].time).total_seconds()
        if seconds <= 0:
            return params.default_speed_mps
        metres = sum(
            haversine_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(ordered)
        )
        speed = metres / seconds
    if speed < params.min_speed_mps:
        # Standing at a red light or waiting at the restaurant says little about the trip.
        return params.default_speed_mps
    return min(speed, params.max_speed_mps)


def remaining_distance_m(
    *,
    lat: float,
    lon: float,
    picked_up: bool,
    pickup: tuple[float, float],
    dropoff: tuple[float, float],
) -> float:
    if picked_up:
        return haversine_m(lat, lon, *dropoff)
    return haversine_m(lat, lon, *pickup) + haversine_m(*pickup, *dropoff)


def estimate_arrival(
    *,
    last: Fix,
    recent: list[Fix],
    picked_up: bool,
    pickup: tuple[float, float],
    dropoff: tuple[float, float],
    now: datetime,
    params: EtaParameters,
) -> datetime:
    distance = params.detour_factor * remaining_distance_m(
        lat=last.lat, lon=last.lon, picked_up=picked_up, pickup=pickup, dropoff=dropoff
    )
    seconds = distance / average_speed(recent, params)
    return max(now, last.time + timedelta(seconds=seconds))
