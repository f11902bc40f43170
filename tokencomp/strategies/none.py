"""`none`: keep every token. The reference point of every comparison; it ignores the budget on
purpose (the accounting still shows the budget that was asked for)."""

from __future__ import annotations

from tokencomp.plan import Plan
from tokencomp.registry import StrategyInput, register_strategy


@register_strategy("none", budget_free=True)
def keep_all(x: StrategyInput) -> Plan:
    """Identity plan: [N] rows -> the same N rows."""
    return Plan.identity(x.num_rows)
