from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.services import Services, running_services


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """One Mosquitto and one migrated PostgreSQL for the whole session."""
    with running_services() as started:
        yield started


@pytest.fixture
def db(services: Services) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topics and rows that must not collide."""
    return uuid.uuid4().hex[:12]
