"""`python -m broker bootstrap|credentials ACCOUNT`: broker security from the shell.

bootstrap     bring a running broker's roles and service accounts to the wanted state
              (the local stack does this at every start; run it by hand in production)
credentials   print FLEETPULSE_MQTT_* lines that give a process its account, for `env`
"""

from __future__ import annotations

import argparse
import sys

from broker.accounts import (
    SERVICE_ACCOUNTS,
    CredentialsError,
    accounts_for,
    admin_credentials,
    ensure_service_secrets,
    process_environment,
)
from broker.bootstrap import bootstrap_broker
from broker.dynsec import BrokerAdminError, BrokerEndpoint, DynsecControl
from config import ConfigError, load_settings
from config.startup import cannot_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bootstrap")
    credentials = commands.add_parser("credentials")
    credentials.add_argument("account", choices=SERVICE_ACCOUNTS)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "credentials":
            for name, value in process_environment(settings.data_dir, args.account).items():
                print(f"{name}={value}")
            return 0
        accounts = ensure_service_secrets(
            settings.data_dir, accounts=accounts_for(settings.environment)
        )
        endpoint = BrokerEndpoint(settings.mqtt_host, settings.mqtt_port)
        with DynsecControl(endpoint, admin_credentials(settings)) as control:
            report = bootstrap_broker(
                control,
                accounts=accounts,
                topic_prefix=settings.topic_prefix,
            )
        print(f"broker security: {report.summary()}")
        return 0
    except (ConfigError, CredentialsError, BrokerAdminError) as exc:
        return cannot_start("broker", exc, status=1)


if __name__ == "__main__":
    sys.exit(main())
