"""`python -m auth token --role customer --uid alice`: print a local-mode token."""

from __future__ import annotations

import argparse
import sys

from auth.errors import AuthConfigError, MissingClaims
from auth.local import LocalSigner, LocalVerifier
from auth.principal import ROLES
from config import ConfigError, load_settings
from config.startup import cannot_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a token signed with the local key")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--uid", required=True, help="the user id (a customer's identity)")
    token.add_argument("--courier-id", help="required for --role courier")
    token.add_argument("--restaurant-id", help="required for --role restaurant")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        settings = load_settings()
        signer = LocalSigner.from_data_dir(settings.data_dir)
        issued = signer.issue(
            uid=args.uid,
            role=args.role,
            courier_id=args.courier_id,
            restaurant_id=args.restaurant_id,
            ttl_s=args.ttl,
        )
        # Refuse to print a token no server would accept (e.g. a courier without an id).
        LocalVerifier.from_data_dir(settings.data_dir).verify(issued)
    except (ConfigError, AuthConfigError, MissingClaims) as exc:
        return cannot_start("auth", exc)
    if settings.effective_auth_mode != "local":
        print(
            "note: FLEETPULSE_AUTH_MODE is firebase; servers with these settings will not "
            "accept local tokens",
            file=sys.stderr,
        )
    print(issued)
    return 0


if __name__ == "__main__":
    sys.exit(main())
