"""`python -m broker.devices add|rotate|revoke|list`: device credentials from the shell.

    python -m broker.devices add courier c-42      prints the new credentials (once)
    python -m broker.devices rotate vehicle v-7    a new password; the old one stops working
    python -m broker.devices revoke courier c-42   disconnects the device at once
    python -m broker.devices list [--all]          active devices (--all: revoked too)

It talks to the broker at FLEETPULSE_MQTT_HOST/PORT as the dynamic-security admin
(FLEETPULSE_MQTT_ADMIN_PASSWORD, or the local stack's secrets file) and records devices in
the database at FLEETPULSE_DATABASE_URL (or the local stack's).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from broker.accounts import CredentialsError
from broker.acl import DeviceKind
from broker.dynsec import BrokerAdminError
from broker.provisioning import DeviceCredentials, DeviceProvisioner, ProvisioningError
from config import ConfigError, load_settings
from config.startup import cannot_start


def print_credentials(credentials: DeviceCredentials, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(credentials)))
        return
    print(f"username:   {credentials.username}")
    print(f"password:   {credentials.password}")
    print(f"client id:  {credentials.client_id}")
    print(f"publish:    {', '.join(credentials.publish_topics)}")
    if credentials.subscribe_topics:
        print(f"subscribe:  {', '.join(credentials.subscribe_topics)}")
    print("The password is shown only now; it is stored nowhere in clear. Lost: rotate it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker.devices", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("add", "rotate", "revoke"):
        command = commands.add_parser(name)
        command.add_argument("kind", choices=[k.value for k in DeviceKind])
        command.add_argument("owner_id", help="the courier or vehicle id, e.g. c-42")
        command.add_argument("--json", action="store_true", help="one JSON object")
    listing = commands.add_parser("list")
    listing.add_argument("--all", action="store_true", help="include revoked devices")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        with DeviceProvisioner.from_settings(settings) as provisioner:
            if args.command == "add":
                created = provisioner.create(kind=args.kind, owner_id=args.owner_id)
                print_credentials(created, as_json=args.json)
            elif args.command == "rotate":
                rotated = provisioner.rotate(kind=args.kind, owner_id=args.owner_id)
                print_credentials(rotated, as_json=args.json)
            elif args.command == "revoke":
                device = provisioner.revoke(kind=args.kind, owner_id=args.owner_id)
                if args.json:
                    print(json.dumps(asdict(device), default=str))
                else:
                    print(f"revoked {device.username} at {device.revoked_at:%Y-%m-%d %H:%M:%S%z}")
            else:
                for device in provisioner.list(include_revoked=args.all):
                    if args.json:
                        print(json.dumps(asdict(device), default=str))
                        continue
                    state = (
                        f"revoked {device.revoked_at:%Y-%m-%d %H:%M}"
                        if device.revoked_at
                        else "active"
                    )
                    print(f"{device.username:<40} {state}")
    except (ConfigError, CredentialsError, BrokerAdminError, ProvisioningError) as exc:
        return cannot_start("broker.devices", exc, status=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
