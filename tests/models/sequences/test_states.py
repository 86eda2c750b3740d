"""Status labels read into canonical states: agency months-behind codes against days-past-due figures."""

from __future__ import annotations

from models.sequences.states import canonical_states


def test_freddie_months_behind_codes_past_twelve_stay_months_behind() -> None:
    # setup: Freddie Mac's CURRENT_LOAN_DELINQUENCY_STATUS on a 2020+ book, where forbearance and long foreclosures
    # leave loans 13-21 payments behind, beside RA (REO acquired); 13+ used to turn every code into days past due
    labels = [str(code) for code in range(22)] + ["RA"]
    # run
    states = canonical_states(labels)
    # assert: 0 current, 1 dpd30, 2 dpd60, 3 and beyond dpd90; RA (REO acquired) default
    assert states["0"] == "current" and states["1"] == "dpd30" and states["2"] == "dpd60"
    assert {states[str(code)] for code in range(3, 22)} == {"dpd90"}
    assert states["RA"] == "default"


def test_months_behind_codes_past_thirty_are_not_read_as_day_buckets() -> None:
    # setup: a judicial-state book with a loan 30 payments behind; "30" alone would be the dpd30 day bucket
    labels = [str(code) for code in range(31)]
    # run / assert
    assert canonical_states(labels)["30"] == "dpd90"


def test_day_buckets_written_as_bare_numbers_stay_days() -> None:
    # setup: days past due in 30-day steps, and in 15-day steps, are days whatever their spread
    days = canonical_states(["0", "30", "60", "90", "120"])
    halves = canonical_states(["0", "15", "30", "45", "60", "75", "90", "105"])
    # assert
    assert days == {"0": "current", "30": "dpd30", "60": "dpd60", "90": "dpd90", "120": "dpd90"}
    assert [halves[k] for k in ("15", "45", "75", "105")] == ["current", "dpd30", "dpd60", "dpd90"]


def test_sparse_or_large_bare_numbers_are_days() -> None:
    # setup: a days-past-due column of a seasoned book (few distinct, widely spread figures), and one past 120
    sparse = canonical_states(["0", "3", "17", "45", "88"])
    large = canonical_states([str(d) for d in range(0, 200, 7)])
    # assert
    assert [sparse[k] for k in ("3", "17", "45", "88")] == ["current", "current", "dpd30", "dpd60"]
    assert large["28"] == "current" and large["35"] == "dpd30" and large["63"] == "dpd60" and large["91"] == "dpd90"


def test_a_young_book_of_days_zero_to_twentynine_reads_as_months_behind() -> None:
    # setup: every figure 0..29 and nothing past: from the labels alone this is a dense run of months behind,
    # documented as such (a days column is mapped as performance.days_past_due instead)
    states = canonical_states([str(d) for d in range(30)])
    # assert
    assert states["1"] == "dpd30" and states["29"] == "dpd90"


def test_freddie_ra_reo_acquisition_beside_months_behind_codes_is_default() -> None:
    # setup: Freddie Mac's CURRENT_LOAN_DELINQUENCY_STATUS: months behind 0, 1, 2, ... and RA (REO acquisition: the
    # property was taken). RA was unknown, so every Freddie history with a repossession was refused
    agency = canonical_states(["0", "1", "2", "3", "RA"])
    young = canonical_states(["0", "RA"])  # a book where nobody is behind yet, one loan already repossessed
    worded = canonical_states(["Current", "Arrears", "RA"])  # beside words RA may be a repayment arrangement
    # assert: RA is default where the column holds agency codes, and left for status_labels beside words
    assert agency["RA"] == "default" and agency["3"] == "dpd90"
    assert young["RA"] == "default"
    assert worded["RA"] is None
