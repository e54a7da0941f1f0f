"""Pick the verifier the settings ask for, refusing combinations that would be unsafe."""

from __future__ import annotations

from auth.errors import AuthConfigError
from auth.firebase import EMULATOR_HOST_VARIABLE, FirebaseVerifier, emulator_host
from auth.local import LocalVerifier
from auth.verifier import Verifier
from config import Settings


def check_auth_settings(settings: Settings) -> None:
    """Raise AuthConfigError for settings a process must not start with."""
    if settings.environment == "production":
        if emulator_host():
            raise AuthConfigError(
                f"{EMULATOR_HOST_VARIABLE} is set while FLEETPULSE_ENVIRONMENT=production: "
                "the emulator accepts unsigned tokens. Unset it, or run with "
                "FLEETPULSE_ENVIRONMENT=local."
            )
        if settings.effective_auth_mode == "local":
            raise AuthConfigError(
                "FLEETPULSE_AUTH_MODE=local is for development; production must use firebase"
            )
    if settings.effective_auth_mode == "firebase" and not settings.firebase_project_id:
        raise AuthConfigError(
            "FLEETPULSE_AUTH_MODE=firebase needs FLEETPULSE_FIREBASE_PROJECT_ID "
            "(the Firebase project whose ID tokens to accept)"
        )


def build_verifier(settings: Settings) -> Verifier:
    check_auth_settings(settings)
    if settings.effective_auth_mode == "firebase":
        return FirebaseVerifier(
            project_id=settings.firebase_project_id,
            clock_skew_s=settings.auth_clock_skew_s,
        )
    return LocalVerifier.from_data_dir(settings.data_dir, leeway_s=settings.auth_clock_skew_s)
