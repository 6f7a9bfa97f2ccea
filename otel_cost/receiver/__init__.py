"""The OTLP receiver: gRPC (4317) and HTTP (4318), protobuf and JSON, gzip, bearer tokens, TLS."""

from .auth import BearerTokens
from .grpc_server import add_trace_service
from .http_server import otlp_http_app

__all__ = ["BearerTokens", "add_trace_service", "otlp_http_app"]
