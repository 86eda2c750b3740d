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
# Letter codes agency tapes write among their months-behind numbers: Freddie Mac's CURRENT_LOAN_DELINQUENCY_STATUS
# 'RA' (REO acquisition: the lender took the property, a default). Read only in a column of such numbers: beside
# worded statuses 'RA' may be a servicer's own word (a repayment arrangement), left for status_labels to name.
# Freddie's 'XX' (unknown) is not listed: it says nothing of the month, and is refused as an unknown label.
AGENCY_CODES: dict[str, str] = {"ra": "default"}
# Words that may stand beside a number of days in a delinquency label ("30 days past due", "late (31-120 days)").
_DAY_WORDS = frozenset({"dpd", "day", "days", "d", "past", "due", "late", "delinquent", "delinquency", "overdue",
                        "arrears", "in", "plus", "to", "and", "over", "more", "than", "or", "bucket"})
_SEPARATORS = re.compile(r"[\s_\-./]+")
# Bare-number statuses up to this many may count months (payments) behind, as agencies report them: Freddie Mac's
# CURRENT_LOAN_DELINQUENCY_STATUS runs 0, 1, 2, ... past 12 on books with forbearance or long foreclosures.
_MAX_MONTHS_BEHIND = 120
# ... and always do up to this many (0/1/2/3 tapes, the reading before agency codes past a year were seen).
_SURELY_MONTHS_BEHIND = 12
# Day buckets step in these (0/30/60/90, 0/15/30/45): bare numbers all on such steps are days, never months.
_DAY_STEP = 15


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


def _bare_number(label: str) -> int | None:
    """The whole number a label is when it is nothing else ("3", " 21", "00"), else None."""
    text = label.strip()
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def _counts_months_behind(numbers: set[int]) -> bool:
    """Whether a column's bare numbers count months behind rather than days past due (see `canonical_states`)."""
    if not numbers or max(numbers) == 0:
        return False
    top = max(numbers)
    if top <= _SURELY_MONTHS_BEHIND:
        return True
    if top > _MAX_MONTHS_BEHIND or all(n % _DAY_STEP == 0 for n in numbers):
        return False
    # Months behind are reached one month at a time, so a book's codes fill most of 0..max; days are sparse.
    return 2 * len(numbers) >= top + 1


def months_behind_width(labels: Iterable[str]) -> int | None:
    """How a column of status labels writes months behind, or None when its bare numbers are not months behind.

    The decision is `canonical_states`' (made on the column's labels
    together). The width is the fixed width of zero-padded codes (2 for
    Fannie Mae's "00", "01", ...), 0 when the codes are written unpadded
    (Freddie Mac's 0, 1, 2, ...): a release writes 4, 5, ... months behind
    back the same way (`models.sequences.histories.render_history`).
    """
    numbers = {str(label).strip(): _bare_number(str(label)) for label in labels}
    numbers = {text: n for text, n in numbers.items() if n is not None}
    if not _counts_months_behind(set(numbers.values())):
        return None
    return zero_padding(numbers)


def zero_padding(codes: Iterable[str]) -> int:
    """The width a column's zero-padded codes are written at ("01", "002": 3), 0 when none is padded ("1", "10")."""
    return max((len(code) for code in codes if len(code) > 1 and code.startswith("0")), default=0)


def canonical_states(labels: Iterable[str]) -> dict[str, str | None]:
    """The canonical state of each distinct status label of one column (None where it is not recognised).

    Worded labels go through `STATE_ALIASES`; labels naming days past due
    ("30", "30-59", "90+ DPD", "Late (16-30 days)") fall into the bucket of
    their lower bound, so "1-29 DPD" is current.

    A column's bare numbers count months behind, as agency tapes write them
    (0 current, 1 dpd30, 2 dpd60, 3 and more dpd90), when they look like
    agency codes: all 0 to 12, or up to 120 and filling at least half of
    0..max (Freddie Mac's 0, 1, ..., 21 on a book with loans in forbearance
    or long foreclosure: a loan reaches 21 months behind through every month
    before it, and the book's other loans fill in the run). Numbers all on
    15-day steps (0/30/60/90/120, 0/15/30/45) are days past due whatever
    their spread, and so are sparse or larger ones (0, 3, 17, 45, 88). The
    decision is made on the column's labels together, never label by label:
    one loan 13 months behind must not turn every other code into days.
    Read as months, the numbers are months even where they spell a day
    bucket, so "30" is 30 months behind, not dpd30. Beside such codes (or
    codes all 0), agency letter codes are read too (`AGENCY_CODES`: Freddie
    Mac's RA, REO acquisition, is default).

    The labels alone cannot tell a dense run of small days from months: a
    very young book's days column holding every figure 0, 1, ..., 29 (nobody
    yet 30 days late) reads as months behind, 1 as dpd30. Such a column is a
    days-past-due figure and belongs under `performance.days_past_due`,
    which is always read as days; numbers the tenant declares under
    `performance.status_labels` are read as declared and take no part in
    this decision.
    """
    labels = list(dict.fromkeys(labels))
    numbers = {label: _bare_number(label) for label in labels}
    bare = {n for n in numbers.values() if n is not None}
    months_behind = _counts_months_behind(bare)
    agency = months_behind or bare == {0}
    out: dict[str, str | None] = {}
    for label in labels:
        if months_behind and numbers[label] is not None:
            out[label] = state_from_days_past_due(30 * numbers[label])
            continue
        if agency and _normalise(label) in AGENCY_CODES:
            out[label] = AGENCY_CODES[_normalise(label)]
            continue
        word = STATE_ALIASES.get(_normalise(label))
        if word is not None:
            out[label] = word
            continue
        days = _days_of(label)
        out[label] = None if days is None else state_from_days_past_due(days)
    return out
