"""The generalised labels k-anonymity recoding writes (`models.privacy.anonymize`), read back.

A released numeric value may be a range ("[30, 45)", "< 30", ">= 45", edges
possibly ISO dates) and a released category a group ("north|south") or "*"
for any value. `parse_generalised_label` turns such a label into a
`NumericRange` or a `CategoryGroup`, so the audit's distance and the
validation report can tell which real values a released label stands for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.privacy.anonymize import ANY_LABEL

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EDGE = rf"(-inf|[-+]?inf|{_NUMBER}|\d{{4}}-\d{{2}}-\d{{2}}(?:[T ][\d:.]+)?)"
_RANGE = re.compile(rf"^\s*([\[(])\s*{_EDGE}\s*,\s*{_EDGE}\s*([\])])\s*$", re.IGNORECASE)
_BOUND = re.compile(rf"^\s*(<=|>=|<|>)\s*{_EDGE}\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class NumericRange:
    """A generalised numeric value: the interval a real value was recoded into."""

    low: float
    high: float
    low_closed: bool = True
    high_closed: bool = False

    def contains(self, value: float) -> bool:
        """True when `value` lies inside the interval (edges as written)."""
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return bool(above and below)

    def distance(self, value: float) -> float:
        """Unscaled distance from `value` to the interval (0 inside it)."""
        return float(max(self.low - value, value - self.high, 0.0))


@dataclass(frozen=True)
class CategoryGroup:
    """A generalised category: the set of real categories it stands for.

    `members` is None for a suppressed value ("*"), which stands for any.
    """

    members: frozenset[str] | None

    def contains(self, value: str | None) -> bool:
        """True when the real category `value` is one the group stands for."""
        return self.members is None or value in self.members


def _edge_value(text: str) -> float:
    token = text.strip().lower()
    if token in ("-inf", "inf", "+inf"):
        return -math.inf if token.startswith("-") else math.inf
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", token):
        moment = datetime.fromisoformat(text.strip())
        return (moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)).total_seconds() / 86_400.0
    return float(token)


def parse_generalised_label(label: Any) -> NumericRange | CategoryGroup | None:
    """Parse a label written by k-anonymity recoding (`models.privacy.anonymize`).

    Args:
        label: a released value. Numeric ranges read "[a, b)", "< b", ">= a"
            (also "(a, b]", "(-inf, b)", "[a, inf)", "<= b", "> a"; edges may be
            ISO dates, read as days since 1970); category groups read "a|b|c";
            "*" (and "*|(missing)") stands for any value.

    Returns:
        A `NumericRange`, a `CategoryGroup` (members None for "any"), or None
        when `label` is not a generalised label (a plain value, "(missing)",
        or not a string).
    """
    if not isinstance(label, str):
        return None
    text = label.strip()
    parts = [part.strip() for part in text.split("|")]
    if ANY_LABEL in parts:
        return CategoryGroup(None)
    match = _RANGE.match(text)
    if match:
        opening, low, high, closing = match.groups()
        low_value, high_value = _edge_value(low), _edge_value(high)
        if low_value > high_value:
            return None
        return NumericRange(low_value, high_value, opening == "[", closing == "]")
    match = _BOUND.match(text)
    if match:
        operator, edge = match.groups()
        value = _edge_value(edge)
        if operator.startswith("<"):
            return NumericRange(-math.inf, value, False, operator == "<=")
        return NumericRange(value, math.inf, operator == ">=", False)
    if len(parts) > 1:
        return CategoryGroup(frozenset(parts))
    return None
