"""The OpenAPI document for the API on port 8318 (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_ERROR = {"$ref": "#/components/schemas/Error"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "otel-cost API", "version": "1"},
    "paths": {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the receiver accepts and the store is writable",
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready", "content": {"application/json": {"schema": _ERROR}}},
                },
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        "/v1/sql": {
            "post": {
                "summary": "Run a read-only SQL query against the store",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["query"],
                                "properties": {
                                    "query": {
                                        "type": "string",
                                        "example": "SELECT team, sum(cost) FROM requests WHERE billable GROUP BY team",
                                    },
                                    "format": {"type": "string", "enum": ["json", "csv"], "default": "json"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "json: columns and rows (Decimals as strings); csv: CSV with a header row",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/QueryResult"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "400": {
                        "description": "invalid or non-read-only query",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    "401": {
                        "description": "missing or wrong bearer token",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
        },
        "/v1/caps": {
            "get": {
                "summary": "The cap state document gateways enforce (ETag; If-None-Match -> 304; ?wait= long-poll)",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "maximum": 55},
                        "description": "seconds to hold the request until the version moves past If-None-Match",
                    }
                ],
                "responses": {
                    "200": {"description": "the cap state document", "content": {"application/json": {}}},
                    "304": {"description": "unchanged since the ETag sent"},
                    "401": {
                        "description": "missing or wrong read token",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
        },
        "/v1/alerts": {
            "get": {
                "summary": "Alerts fired recently, newest first, with the sinks that acknowledged each",
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "string", "default": "24h"},
                        "description": "a duration (90m, 24h, 7d), a date or an ISO 8601 time",
                    },
                    {
                        "name": "kind",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "only these kinds (repeat, or comma-separated)",
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
                ],
                "responses": {
                    "200": {
                        "description": '{"since": ISO time, "alerts": [alert documents with "delivered_to"]}',
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": {"description": "bad parameter", "content": {"application/json": {"schema": _ERROR}}},
                    "401": {
                        "description": "missing or wrong read token",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "integer"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    }
                },
            },
            "QueryResult": {
                "type": "object",
                "properties": {
                    "columns": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                        },
                    },
                    "rows": {"type": "array", "items": {"type": "array"}},
                },
            },
        },
    },
}
