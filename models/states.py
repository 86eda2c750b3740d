"""Monthly loan performance states shared by ingest, the demo generator and the cascade.

A loan's month-by-month status is one of `STATES`. `default`, `prepaid` and
`matured` are absorbing: a path stops there.
"""

from __future__ import annotations

STATES: tuple[str, ...] = ("current", "dpd30", "dpd60", "dpd90", "default", "prepaid", "matured")
ABSORBING: frozenset[str] = frozenset({"default", "prepaid", "matured"})
STATE_INDEX: dict[str, int] = {s: i for i, s in enumerate(STATES)}

# Labels tapes use for the same states, mapped to the canonical name (lower-cased keys).
STATE_ALIASES: dict[str, str] = {
    "current": "current", "c": "current", "0": "current", "ok": "current", "performing": "current",
    "dpd30": "dpd30", "30": "dpd30", "30dpd": "dpd30", "1-29": "dpd30", "30-59": "dpd30",
    "dpd60": "dpd60", "60": "dpd60", "60dpd": "dpd60", "60-89": "dpd60",
    "dpd90": "dpd90", "90": "dpd90", "90+": "dpd90", "90dpd": "dpd90", "dpd90+": "dpd90",
    "default": "default", "d": "default", "charged_off": "default", "chargeoff": "default",
    "charged off": "default", "written_off": "default",
    "prepaid": "prepaid", "p": "prepaid", "paid_off": "prepaid", "paid off": "prepaid", "prepayment": "prepaid",
    "matured": "matured", "m": "matured", "closed": "matured", "fully_paid": "matured", "fully paid": "matured",
}


def state_from_days_past_due(days: int) -> str:
    """The delinquency bucket for a days-past-due figure (not for absorbing states)."""
    if days < 30:
        return "current"
    if days < 60:
        return "dpd30"
    if days < 90:
        return "dpd60"
    return "dpd90"
