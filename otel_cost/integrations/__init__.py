"""Integrations with gateways that enforce otel-cost cap state. Each module imports its gateway's
package itself, so `import otel_cost` never needs them: `otel_cost.integrations.litellm` needs litellm."""
