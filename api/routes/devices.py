"""Device MQTT credentials through the broker package's provisioning: an admin, or a courier
for their own phone, creates, rotates and revokes them. The password is shown once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query

from api.errors import ERROR_RESPONSES, Conflict, Forbidden, NotFound, ServiceUnavailable
from api.schemas import Device, DeviceCredentials, DeviceIn, DeviceList
from api.security import CurrentPrincipal, require
from api.state import ApiState, InvalidValue, State
from auth import Principal
from broker import (
    BrokerAdminError,
    DeviceExistsError,
    DeviceNotFoundError,
    DeviceProvisioner,
    InvalidDeviceError,
    ProvisioningError,
)
from broker import Device as BrokerDevice
from broker import DeviceCredentials as BrokerCredentials

router = APIRouter(responses=ERROR_RESPONSES, tags=["devices"])

OwnerKind = Annotated[Literal["courier", "vehicle"], Path()]
OwnerId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")]
T = TypeVar("T")


def _check_owner(principal: Principal, kind: str, owner_id: str) -> None:
    """Admins manage every device; a courier only their own phone."""
    require(principal, "admin", "courier")
    if principal.role == "courier" and (kind != "courier" or owner_id != principal.courier_id):
        raise Forbidden("a courier manages only the credentials of their own phone")


async def _provision(state: ApiState, work: Callable[[DeviceProvisioner], T]) -> T:
    def run() -> T:
        with DeviceProvisioner.from_settings(state.settings) as provisioner:
            return work(provisioner)

    try:
        return await asyncio.to_thread(run)
    except DeviceExistsError as exc:
        raise Conflict(str(exc)) from None
    except DeviceNotFoundError as exc:
        raise NotFound(str(exc)) from None
    except InvalidDeviceError as exc:
        raise InvalidValue(str(exc)) from None
    except (ProvisioningError, BrokerAdminError) as exc:
        raise ServiceUnavailable(f"device provisioning is unavailable: {exc}") from None


def _credentials_out(state: ApiState, credentials: BrokerCredentials) -> DeviceCredentials:
    settings = state.settings
    return DeviceCredentials(
        username=credentials.username,
        password=credentials.password,
        client_id=credentials.client_id,
        owner_kind=credentials.kind.value,
        owner_id=credentials.owner_id,
        mqtt_host=settings.mqtt_tls_host or settings.mqtt_host,
        mqtt_port=settings.mqtt_port,
        mqtt_tls_port=settings.mqtt_tls_port,
        publish_topics=list(credentials.publish_topics),
        subscribe_topics=list(credentials.subscribe_topics),
    )


def _device_out(device: BrokerDevice) -> Device:
    return Device(
        username=device.username,
        owner_kind=device.kind.value,
        owner_id=device.owner_id,
        created_at=device.created_at,
        rotated_at=device.rotated_at,
        revoked_at=device.revoked_at,
    )


async def _owner_exists(state: ApiState, kind: str, owner_id: str) -> None:
    table = "couriers" if kind == "courier" else "vehicles"
    async with state.transaction() as conn:
        cur = await conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", (owner_id,))  # noqa: S608
        if await cur.fetchone() is None:
            raise NotFound(f"{kind} {owner_id!r} not found")


@router.post("/devices", status_code=201)
async def create_device(
    body: DeviceIn, state: State, principal: CurrentPrincipal
) -> DeviceCredentials:
    """New MQTT credentials for a courier's phone or a vehicle's tracker. The password is in
    this answer only; it is stored nowhere in plain text. 409 if the device already has
    active credentials (rotate them instead)."""
    _check_owner(principal, body.owner_kind, body.owner_id)
    await _owner_exists(state, body.owner_kind, body.owner_id)
    credentials = await _provision(
        state, lambda p: p.create(kind=body.owner_kind, owner_id=body.owner_id)
    )
    return _credentials_out(state, credentials)


@router.get("/devices")
async def list_devices(
    state: State,
    principal: CurrentPrincipal,
    include_revoked: Annotated[bool, Query()] = False,
) -> DeviceList:
    """Devices and their state (never their passwords): all for an admin, a courier's own."""
    require(principal, "admin", "courier")
    devices = await _provision(state, lambda p: p.list(include_revoked=include_revoked))
    if principal.role == "courier":
        devices = [
            d for d in devices if d.kind.value == "courier" and d.owner_id == principal.courier_id
        ]
    return DeviceList(items=[_device_out(d) for d in devices])


@router.post("/devices/{owner_kind}/{owner_id}/rotate")
async def rotate_device(
    owner_kind: OwnerKind, owner_id: OwnerId, state: State, principal: CurrentPrincipal
) -> DeviceCredentials:
    """A new password (shown once); the old one stops working and its connection is closed."""
    _check_owner(principal, owner_kind, owner_id)
    credentials = await _provision(state, lambda p: p.rotate(kind=owner_kind, owner_id=owner_id))
    return _credentials_out(state, credentials)


@router.delete("/devices/{owner_kind}/{owner_id}")
async def revoke_device(
    owner_kind: OwnerKind, owner_id: OwnerId, state: State, principal: CurrentPrincipal
) -> Device:
    """Revoke the device's credentials; the broker disconnects it at once."""
    _check_owner(principal, owner_kind, owner_id)
    device = await _provision(state, lambda p: p.revoke(kind=owner_kind, owner_id=owner_id))
    return _device_out(device)
