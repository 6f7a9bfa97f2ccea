"""The API on port 8318."""

from .app import api_app, error_response

__all__ = ["api_app", "error_response"]
