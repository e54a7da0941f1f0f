"""Ready-made local-mode tokens that `make run` prints, one per role, for trying things out."""

from __future__ import annotations

from auth import LocalSigner
from config import Settings

DEMO_TOKEN_TTL_S = 12 * 3600.0


def demo_tokens(settings: Settings, *, customer: str) -> dict[str, str]:
    """admin, restaurant r-1, the demo customer, courier c-1; empty unless auth is local."""
    if settings.effective_auth_mode != "local":
        return {}
    signer = LocalSigner.from_data_dir(settings.data_dir)

    ttl = DEMO_TOKEN_TTL_S
    return {
        "admin": signer.issue(uid="dispatch", role="admin", ttl_s=ttl),
        "restaurant": signer.issue(
            uid="owner-r-1", role="restaurant", restaurant_id="r-1", ttl_s=ttl
        ),
        "customer": signer.issue(uid=customer, role="customer", ttl_s=ttl),
        "courier": signer.issue(uid="rider-c-1", role="courier", courier_id="c-1", ttl_s=ttl),
    }
