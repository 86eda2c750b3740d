"""What a column's name says: its words, and whether they name a money amount, an interest rate or an income.

Public layouts spell the same columns many ways (credit_amount, MonthlyIncome,
LIMIT_BAL, ORIGINAL_UPB, loan_int_rate), so names are read by their words
(`name_words`: separators, CamelCase and digits split them), not compared
with fixed lists. The tape checks (`resources.expectations`), the stress
test's column search (`models.risk.stress`), the schema's key and person-name
rules (`models.tape.schema`) and the reader's notes share these readings.
"""

from __future__ import annotations

import re

# Word parts of a money column's name (see `name_words`): public layouts spell the same amounts many ways
# (credit_amount, MonthlyIncome, LIMIT_BAL, PAY_AMT1, ORIGINAL_UPB, annual_inc, loanamt), so a name is read by
# its words, not compared with a fixed list. "bal" and "lim" count only as whole words (global, prelim).
AMOUNT_WORDS: tuple[str, ...] = (
    "amount", "amnt", "amt", "upb", "balance", "bal", "principal", "income", "inc", "salary", "limit", "lim",
)
_WHOLE_WORD_ONLY = frozenset({"bal", "lim"})
# Words that make an amount a signed quantity: a bill or statement balance goes below zero when the customer
# has overpaid (Taiwan's BILL_AMT1..6, causaldata's BillApril), and a net, change or gain figure can fall.
SIGNED_WORDS = frozenset({
    "bill", "statement", "net", "change", "chg", "diff", "delta", "gain", "loss", "adjustment", "adj",
})
# Words that make a name a ratio of amounts (loan_percent_income, debt_to_income), not an amount.
RATIO_WORDS = frozenset({"ratio", "percent", "pct", "to", "per", "share", "util", "utilization"})
# Words that make a name a count or a label about an amount (num_cc_carrying_balance, verified_income,
# ZERO_BALANCE_CODE), not the amount itself.
LABEL_WORDS = frozenset({
    "num", "number", "count", "cnt", "nbr", "verified", "verification", "source", "type", "status", "flag", "code",
    "indicator", "date",
})
# A rate word names the loan's interest rate only when every other word qualifies it as such (loan_int_rate,
# ORIGINAL_INTEREST_RATE, ORIG_RATE, NoteRate); default_rate, unemployment_rate or exchange_rate do not.
RATE_WORDS = frozenset({"rate", "rt", "apr"})
RATE_QUALIFIERS = frozenset({
    "interest", "int", "note", "coupon", "orig", "original", "loan", "contract", "mortgage", "nominal", "current",
    "curr", "initial", "borrower", "annual", "percentage",
})


def name_words(column: str) -> list[str]:
    """The lower-case words of a column name: separators, CamelCase and digits split it.

    ``MonthlyIncome`` is monthly, income; ``LIMIT_BAL`` limit, bal; ``PAY_AMT1``
    pay, amt, 1; ``UPBAmount`` upb, amount. Names are matched by these words so a
    hint inside an unrelated word (the "rate" of "separate") never counts.
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", column.strip())
    spaced = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", spaced)
    spaced = re.sub(r"(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])", " ", spaced)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


def is_amount_name(column: str) -> bool:
    """Whether a column's name says it holds a money amount that is never negative.

    A word of the name is one of `AMOUNT_WORDS`, or ends with one (loanamt,
    appinc, atotinc: tapes that run words together), and no word makes it a
    signed figure (`SIGNED_WORDS`: BILL_AMT1 is negative on a credit balance),
    a ratio (`RATIO_WORDS`: loan_percent_income) or a count or label
    (`LABEL_WORDS`: num_cc_carrying_balance, verified_income).
    """
    words = name_words(column)
    if any(w in SIGNED_WORDS or w in RATIO_WORDS or w in LABEL_WORDS for w in words):
        return False
    return any(
        word == hint or (hint not in _WHOLE_WORD_ONLY and word.endswith(hint))
        for word in words
        for hint in AMOUNT_WORDS
    )


def is_interest_rate_name(column: str) -> bool:
    """Whether a column's name says it holds the loan's interest rate.

    A rate word (`RATE_WORDS`) whose other words all qualify it as the loan's
    rate (`RATE_QUALIFIERS`, digits aside): loan_int_rate, ORIGINAL_INTEREST_RATE,
    ORIG_RATE, InterestRate, intrate, Prosper's BorrowerRate and BorrowerAPR. Other rates (default_rate,
    unemployment_rate) hold no interest rate and are left out.
    """
    words = [w for w in name_words(column) if not w.isdigit()]
    rates = [w for w in words if w in RATE_WORDS or any(w == q + "rate" for q in RATE_QUALIFIERS)]
    return bool(rates) and all(w in rates or w in RATE_QUALIFIERS for w in words)


def is_income_name(column: str) -> bool:
    """Whether a column's name says it holds the borrower's income: MonthlyIncome, person_income, appinc."""
    words = name_words(column)
    return is_amount_name(column) and any(w in ("income", "salary") or w.endswith("inc") for w in words)


def word_key(name: str) -> str:
    """`name` as its words joined by underscores: CustomerName and 'Customer Name' are customer_name."""
    return "_".join(name_words(name))


# Direct identifiers of a person, by name: names, contact details, national numbers. Such a text column is a key
# (regenerated, never released) even where some values repeat: a name shared by five borrowers is still a name.
_PERSON_NAME = re.compile(
    r"^((first|last|full|given|family|middle|maiden|customer|borrower|client|applicant|debtor|member|owner|"
    r"co_?borrower|guarantor|cardholder|account_?holder|contact|person)_?)?names?$"
    r"|^(sur_?name|forename|e_?mail(_?address)?|phone(_?number)?|telephone|mobile(_?number)?|cell_?phone|fax|"
    r"ssn|social_?security(_?number)?|national_?id(_?number)?|passport(_?number)?|tax_?id|nin|iban|"
    r"street(_?address)?|address(_?line_?\d)?|home_?address|postal_?address|date_?of_?birth|dob|birth_?date)$"
)


def names_a_person(name: str) -> bool:
    """Whether a column's name marks it as a direct identifier of a person (a name, an e-mail, a phone number)."""
    return bool(_PERSON_NAME.match(word_key(name)))
