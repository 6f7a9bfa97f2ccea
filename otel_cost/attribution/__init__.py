"""Stage 3: who pays for a call. Every dollar has an owner, or is visibly `unattributed`."""

from .owner import DIMENSION_SOURCES, OTHER, Attributor, ResourceOwner
from .presets import PRESET_EXAMPLES, PRESETS

__all__ = ["DIMENSION_SOURCES", "OTHER", "PRESETS", "PRESET_EXAMPLES", "Attributor", "ResourceOwner"]
