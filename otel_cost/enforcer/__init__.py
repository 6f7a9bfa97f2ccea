"""Budgets to cap state: the enforcer evaluates every budget from the burn-rate rollups and publishes
the document gateways obey (`GET /v1/caps`, webhooks)."""

from .budgets import ACTIONS, BudgetState, evaluate_budget, severity
from .loop import Enforcer
from .periods import period_bounds, window_bounds
from .state import CapState

__all__ = [
    "ACTIONS",
    "BudgetState",
    "CapState",
    "Enforcer",
    "evaluate_budget",
    "period_bounds",
    "severity",
    "window_bounds",
]
