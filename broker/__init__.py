"""Broker security: Mosquitto's dynamic-security plugin, service accounts, device credentials.

The api provisions devices with `DeviceProvisioner`; processes find their own MQTT account
with `process_credentials`; the local stack bootstraps everything at start.
"""

from broker.accounts import (
    CredentialsError,
    MqttCredentials,
    ServiceAccount,
    admin_credentials,
    load_service_credentials,
    process_credentials,
    process_environment,
)
from broker.acl import DeviceKind
from broker.dynsec import BrokerAdminError, DynsecCommandError
from broker.provisioning import (
    Device,
    DeviceCredentials,
    DeviceExistsError,
    DeviceNotFoundError,
    DeviceProvisioner,
    InvalidDeviceError,
    ProvisioningError,
)

__all__ = [
    "BrokerAdminError",
    "CredentialsError",
    "Device",
    "DeviceCredentials",
    "DeviceExistsError",
    "DeviceKind",
    "DeviceNotFoundError",
    "DeviceProvisioner",
    "DynsecCommandError",
    "InvalidDeviceError",
    "MqttCredentials",
    "ProvisioningError",
    "ServiceAccount",
    "admin_credentials",
    "load_service_credentials",
    "process_credentials",
    "process_environment",
]
