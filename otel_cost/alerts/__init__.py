"""Alerts: budget points and forecasts, runaway agents and retry storms, hygiene; delivered to sinks."""

from .model import SEVERITIES, Alert, Containment, Finding

__all__ = ["SEVERITIES", "Alert", "Containment", "Finding"]
