"""otel-cost: the meter, the ledger and the circuit breaker for LLM spend.

The stages, in the order data flows through them:

    receiver -> semconv (span -> Call) -> pricing (Call -> Priced) -> attribution (-> Owner) -> store
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import OtelCostError
from .model import Call, Owner, Priced

try:
    __version__ = version("otel-cost")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["Call", "OtelCostError", "Owner", "Priced", "__version__"]
