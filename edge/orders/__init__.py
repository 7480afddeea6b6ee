"""Order model, validation and routing: pure code, no I/O."""

from edge.orders.model import Order, canonical_json, content_hash, parse_order
from edge.orders.routing import JobPlan, plan_jobs

__all__ = ["JobPlan", "Order", "canonical_json", "content_hash", "parse_order", "plan_jobs"]
