"""Monthly loan performance states shared by ingest, the demo generator and the cascade.

A loan's month-by-month status is one of `STATES`. `default`, `prepaid` and
`matured` are absorbing: a path stops there.

Lenders spell the states their own way ("C", "Current", "30", "30-59 DPD",
"CO", "Charged Off", "PIF", or months delinquent 0/1/2/3); `canonical_states`
reads such a column's distinct labels into the canonical states.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

STATES: tuple[str, ...] = ("current", "dpd30", "dpd60", "dpd90", "default", "prepaid", "matured")
ABSORBING: frozenset[str] = frozenset({"default", "prepaid", "matured"})
STATE_INDEX: dict[str, int] = {s: i for i, s in enumerate(STATES)}

# Worded labels tapes use for the states (lower-cased keys, runs of spaces, '_', '-', '.' and '/' read as one space).
# Delinquency buckets spelled with numbers ("30", "30-59 days", "dpd90+") are read by `_days_of`, not listed here.
STATE_ALIASES: dict[str, str] = {
    "current": "current", "c": "current", "cur": "current", "curr": "current", "ok": "current",
    "performing": "current", "up to date": "current", "paid as agreed": "current", "on time": "current",
    "in grace period": "current", "grace period": "current", "grace": "current",
    "dpd30": "dpd30", "dpd60": "dpd60", "dpd90": "dpd90",
    "default": "default", "defaulted": "default", "d": "default", "charged off": "default", "chargeoff": "default",
    "chargedoff": "default", "charge off": "default", "co": "default", "written off": "default",
    "write off": "default", "writeoff": "default", "wo": "default", "loss": "default", "bad debt": "default",
    "prepaid": "prepaid", "p": "prepaid", "paid off": "prepaid", "payoff": "prepaid", "pif": "prepaid",
    "paid in full": "prepaid", "prepayment": "prepaid", "prepay": "prepaid", "early payoff": "prepaid",
    "early repayment": "prepaid",
    "matured": "matured", "m": "matured", "mature": "matured", "closed": "matured", "fully paid": "matured",
    "paid": "matured", "completed": "matured", "repaid": "matured",
}
# Callers that look a lower-cased label up directly also find the snake_case spellings and common day buckets.
STATE_ALIASES.update({key.replace(" ", "_"): state for key, state in list(STATE_ALIASES.items()) if " " in key})
STATE_ALIASES.update({
    "0": "current", "1-29": "current", "30": "dpd30", "30dpd": "dpd30", "30-59": "dpd30", "60": "dpd60",
    "60dpd": "dpd60", "60-89": "dpd60", "90": "dpd90", "90+": "dpd90", "90dpd": "dpd90", "dpd90+": "dpd90",
})
# Words that may stand beside a number of days in a delinquency label ("30 days past due", "late (31-120 days)").
_DAY_WORDS = frozenset({"dpd", "day", "days", "d", "past", "due", "late", "delinquent", "delinquency", "overdue",
                        "arrears", "in", "plus", "to", "and", "over", "more", "than", "or", "bucket"})
_SEPARATORS = re.compile(r"[\s_\-./]+")
# Numeric statuses at or below this (0, 1, 2, 3, ...) count months (payments) behind, as agencies report them.
_MAX_MONTHS_BEHIND = 12


def state_from_days_past_due(days: int) -> str:
    """The delinquency bucket for a days-past-due figure (not for absorbing states)."""
    if days < 30:
        return "current"
    if days < 60:
        return "dpd30"
    if days < 90:
        return "dpd60"
    return "dpd90"


def _normalise(label: str) -> str:
    return _SEPARATORS.sub(" ", label.strip().lower()).strip()


def _days_of(label: str) -> int | None:
    """The lower bound of days past due a label like "30", "30-59 DPD", "dpd90+" or "Late (31-120 days)" names."""
    tokens = re.findall(r"\d+|[a-z]+", label.lower())
    numbers = [int(t) for t in tokens if t.isdigit()]
    if not numbers or any(t not in _DAY_WORDS for t in tokens if not t.isdigit()):
        return None
    return numbers[0]


def canonical_states(labels: Iterable[str]) -> dict[str, str | None]:
    """The canonical state of each distinct status label of one column (None where it is not recognised).

    Worded labels go through `STATE_ALIASES`; labels naming days past due
    ("30", "30-59", "90+ DPD", "Late (16-30 days)") fall into the bucket of
    their lower bound, so "1-29 DPD" is current. A column whose bare numbers
    are all small (0 to 12: 0, 1, 2, 3, ...) counts months behind, as agency
    tapes do: 0 current, 1 dpd30, 2 dpd60, 3 and more dpd90. The decision is
    made on the column's labels together, never label by label.
    """
    labels = list(dict.fromkeys(labels))
    bare = [int(label.strip()) for label in labels if label.strip().isdigit()]
    months_behind = bool(bare) and max(bare) <= _MAX_MONTHS_BEHIND and max(bare) > 0
    out: dict[str, str | None] = {}
    for label in labels:
        word = STATE_ALIASES.get(_normalise(label))
        if word is not None:
            out[label] = word
            continue
        if months_behind and label.strip().isdigit():
            out[label] = state_from_days_past_due(30 * int(label.strip()))
            continue
        days = _days_of(label)
        out[label] = None if days is None else state_from_days_past_due(days)
    return out
