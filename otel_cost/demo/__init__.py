"""`otel-cost demo`: realistic GenAI traffic through the real OTel SDK and OTLP exporter."""

from .traffic import DemoSummary, run_demo

__all__ = ["DemoSummary", "run_demo"]
