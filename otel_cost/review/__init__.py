"""Reading what was spent: the weekly review's queries, document and renderers."""

from .queries import QUERIES, Week, query_path, query_text
from .rates import RatesPublisher, publish_rates
from .render import FORMATS, render_review
from .report import SECTIONS, Review, build_review

__all__ = [
    "FORMATS",
    "QUERIES",
    "SECTIONS",
    "RatesPublisher",
    "Review",
    "Week",
    "build_review",
    "publish_rates",
    "query_path",
    "query_text",
    "render_review",
]
