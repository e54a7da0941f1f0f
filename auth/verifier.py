"""The verifier interface both modes implement."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from auth.principal import Principal


class Verifier(ABC):
    @abstractmethod
    def verify(self, token: str) -> Principal:
        """Return who the token belongs to, or raise an AuthError subclass."""

    async def verify_async(self, token: str) -> Principal:
        """The same, off the event loop: Firebase may fetch Google's public keys."""
        return await asyncio.to_thread(self.verify, token)
