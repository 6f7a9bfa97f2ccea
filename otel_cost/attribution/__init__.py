"""Stage 3: who pays for a call. Every dollar has an owner, or is visibly `unattributed`."""

from .owner import DIMENSION_SOURCES, Attributor, ResourceOwner

__all__ = ["DIMENSION_SOURCES", "Attributor", "ResourceOwner"]
