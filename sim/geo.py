"""Flat-enough geometry for a city: distances, bearings, moving toward a point, GPS noise."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class CityBox:
    """The rectangle couriers, restaurants and customers live in."""

    south: float
    west: float
    north: float
    east: float

    def random_point(self, rng: random.Random) -> Point:
        return Point(rng.uniform(self.south, self.north), rng.uniform(self.west, self.east))

    @classmethod
    def parse(cls, text: str) -> CityBox:
        """`south,west,north,east` in degrees."""
        try:
            south, west, north, east = (float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"city box {text!r} is not 'south,west,north,east'") from None
        if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
            raise ValueError(f"city box {text!r} is not a valid rectangle")
        return cls(south, west, north, east)


# Central Berlin, inside the S-Bahn ring and a little beyond.
BERLIN = CityBox(south=52.47, west=13.30, north=52.56, east=13.48)


def distance_m(a: Point, b: Point) -> float:
    """Great-circle distance (haversine)."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(a: Point, b: Point) -> float:
    """Initial bearing from a to b, in [0, 360)."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlon = math.radians(b.lon - a.lon)
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return math.degrees(math.atan2(x, y)) % 360.0


def offset(point: Point, *, north_m: float, east_m: float) -> Point:
    lat = point.lat + math.degrees(north_m / EARTH_RADIUS_M)
    lon = point.lon + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(point.lat))))
    return Point(max(-90.0, min(90.0, lat)), ((lon + 180.0) % 360.0) - 180.0)


def step_toward(origin: Point, target: Point, metres: float) -> Point:
    """Move up to `metres` along the straight line from origin to target."""
    total = distance_m(origin, target)
    if total <= metres or total == 0:
        return target
    fraction = metres / total
    return Point(
        origin.lat + (target.lat - origin.lat) * fraction,
        origin.lon + (target.lon - origin.lon) * fraction,
    )


def with_gps_noise(point: Point, accuracy_m: float, rng: random.Random) -> Point:
    """A fix as a phone reports it: the true point blurred by about `accuracy_m`."""
    sigma = accuracy_m / 2.0
    return offset(point, north_m=rng.gauss(0, sigma), east_m=rng.gauss(0, sigma))
