"""Stage 2: Call -> Priced. Exact prices from the bundled genai-prices catalog."""

from .book import PriceBook, probe_call
from .catalog import CATALOG_VERSION
from .ratecard import RateCard

__all__ = ["CATALOG_VERSION", "PriceBook", "RateCard", "probe_call"]
