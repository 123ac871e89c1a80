"""Spend: per-call records, prices, budgets and their notices.

See :mod:`ccag.spend.system` for how the parts work together, and
:mod:`ccag.ratelimit` for the per-minute limits.
"""

from ccag.spend.recorder import SpendRecord
from ccag.spend.system import SpendSystem

__all__ = ["SpendRecord", "SpendSystem"]
