"""History validation and sequence fidelity measures, on hand-made histories with known answers."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from models.errors import InvalidDataError, ValidationErrors
from models.sequences.histories import (
    compare_sequences,
    cumulative_default_curve,
    loan_paths,
    paths_to_frame,
    prepayment_curve,
    roll_rates,
    time_to_default,
    transition_distance,
    transition_matrix,
    validate_histories,
)
from models.sequences.states import STATE_INDEX


def history(paths: dict[str, list[str]], *, balance: float = 100.0) -> pl.DataFrame:
    """A performance table from {loan_id: [status of month 1, month 2, ...]}."""
    rows = [
        {"loan_id": loan, "period": month, "status": status, "days_past_due": 0, "balance": balance, "payment": 10.0}
        for loan, states in paths.items()
        for month, status in enumerate(states, start=1)
    ]
    return pl.DataFrame(rows, schema_overrides={"period": pl.Int64, "days_past_due": pl.Int64})


# A book of four loans: one defaults in month 4, one prepays in month 3, one stays current, one is one month long.
BOOK = {
    "a": ["current", "dpd30", "dpd60", "default"],
    "b": ["current", "current", "prepaid"],
    "c": ["current", "current", "current", "current"],
    "d": ["current"],
}


# --------------------------------------------------------------------------- validation


def test_valid_history_is_reported_with_one_month_loans():
    # setup
    perf = history(BOOK)
    # run
    report = validate_histories(perf)
    # assert
    assert report.n_loans == 4
    assert report.one_month_loans == 1
    assert report.n_transitions == 3 + 2 + 3
    assert report.max_period == 4
    assert report.state_counts["current"] == 8


def test_gap_in_periods_is_refused_naming_loan_and_fix():
    # setup
    perf = history(BOOK).filter(~((pl.col("loan_id") == "c") & (pl.col("period") == 2)))
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme'.*file 'perf.csv'.*column 'period'.*gaps.*'c'.*Fix: add the missing"):
        validate_histories(perf, tenant="acme", file="perf.csv")


def test_history_not_starting_at_month_one_is_a_gap():
    # setup
    perf = history({"a": ["current", "current"]}).with_columns(pl.col("period") + 2)
    # run / assert
    with pytest.raises(InvalidDataError, match="gaps in their periods"):
        validate_histories(perf)


def test_leaving_default_for_current_is_refused():
    # setup
    perf = history({"a": ["current", "default", "current"], "b": ["current", "current"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'status'.*leave an absorbing state \(default->current\).*'a'"):
        validate_histories(perf)


def test_negative_balance_is_refused():
    # setup
    perf = history(BOOK).with_columns(
        pl.when(pl.col("loan_id") == "b").then(-5.0).otherwise(pl.col("balance")).alias("balance")
    )
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'balance'.*negative balance.*'b'.*Fix: correct the sign"):
        validate_histories(perf)


def test_history_longer_than_term_is_refused():
    # setup
    perf = history(BOOK)
    loans = pl.DataFrame({"loan_id": ["a", "b", "c", "d"], "term_months": [12, 12, 3, 12]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'term_months'.*longer than their term.*'c'"):
        validate_histories(perf, loans)


def test_term_alias_with_text_values_is_read():
    # setup: LendingClub writes terms as ' 36 months'
    perf = history(BOOK)
    loans = pl.DataFrame({"loan_id": ["a", "b", "c", "d"], "term": [" 36 months", " 36 months", " 2 months", " 36 months"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'term'.*longer than their term"):
        validate_histories(perf, loans)


def test_only_one_month_histories_are_refused():
    # setup
    perf = history({"a": ["current"], "b": ["current"]})
    # run / assert
    with pytest.raises(InvalidDataError, match="no loan has a transition.*one month long"):
        validate_histories(perf)


def test_unknown_state_label_is_refused_with_alias_hint():
    # setup
    perf = history({"a": ["current", "Charged Off"], "b": ["current", "late"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"does not know: \['Charged Off', 'late'\].*'Charged Off' -> 'default'"):
        validate_histories(perf)


def test_several_problems_are_reported_together():
    # setup
    perf = history({"a": ["current", "default", "current"], "b": ["current", "bogus"]})
    # run
    with pytest.raises(ValidationErrors) as caught:
        validate_histories(perf, tenant="acme")
    # assert
    messages = [str(p) for p in caught.value.problems]
    assert len(messages) == 2
    assert any("bogus" in m for m in messages) and any("absorbing" in m for m in messages)


def test_missing_column_is_refused():
    # setup
    perf = history(BOOK).drop("status")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'status'.*lacks the column"):
        validate_histories(perf)


# --------------------------------------------------------------------------- measures


def test_transition_matrix_counts_consecutive_months():
    # setup
    perf = history(BOOK)
    # run
    matrix = transition_matrix(perf)
    # assert: from current, 6 transitions: 4 to current, 1 to dpd30, 1 to prepaid
    cur = STATE_INDEX["current"]
    assert matrix[cur, cur] == pytest.approx(4 / 6)
    assert matrix[cur, STATE_INDEX["dpd30"]] == pytest.approx(1 / 6)
    assert matrix[cur, STATE_INDEX["prepaid"]] == pytest.approx(1 / 6)
    assert matrix[STATE_INDEX["dpd60"], STATE_INDEX["default"]] == 1.0
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert matrix[STATE_INDEX["dpd90"], STATE_INDEX["dpd90"]] == 1.0  # unobserved row: identity
    assert matrix[STATE_INDEX["default"], STATE_INDEX["default"]] == 1.0


def test_transition_distance_is_mean_absolute_difference_per_row():
    # setup
    a = np.eye(7)
    b = np.eye(7)
    b[0, 0], b[0, 1] = 0.93, 0.07
    # run
    distance = transition_distance(a, b)
    # assert
    assert distance["per_state"]["current"] == pytest.approx(0.14 / 7)
    assert distance["per_state"]["dpd30"] == 0.0
    assert distance["max"] == pytest.approx(0.02)
    assert distance["mean"] == pytest.approx(0.02 / 4)


def test_roll_and_cure_rates():
    # setup
    perf = history({"a": ["current", "dpd30", "dpd60"], "b": ["current", "dpd30", "current"], "c": ["current", "current"]})
    # run
    rates = roll_rates(perf)
    # assert
    assert rates["roll"]["current->dpd30"] == pytest.approx(2 / 3)
    assert rates["roll"]["dpd30->dpd60"] == pytest.approx(0.5)
    assert rates["cure"]["dpd30->current"] == pytest.approx(0.5)
    assert rates["roll"]["dpd90->default"] is None
    assert rates["roll_balance"]["dpd30->dpd60"] == pytest.approx(0.5)


def test_cumulative_default_curve_drops_censored_loans():
    # setup
    perf = history(BOOK)
    # run
    curve = cumulative_default_curve(perf)
    # assert: loan d (open, one month) leaves the denominator after month 1; b ended (prepaid) and stays
    assert curve.get_column("loans").to_list() == [4, 3, 3, 3]
    assert curve.get_column("defaults").to_list() == [0, 0, 0, 1]
    assert curve.get_column("cumulative_default_rate").to_list()[-1] == pytest.approx(1 / 3)


def test_cumulative_default_curve_by_vintage():
    # setup
    perf = history(BOOK)
    loans = pl.DataFrame(
        {"loan_id": ["a", "b", "c", "d"], "origination_date": [date(2021, 1, 5), date(2021, 2, 1), date(2021, 5, 1), date(2021, 6, 9)]}
    )
    # run
    curve = cumulative_default_curve(perf, loans, by_vintage=True)
    # assert
    last = curve.filter(pl.col("months_on_book") == 4).sort("vintage")
    assert last.get_column("vintage").to_list() == ["2021Q1", "2021Q2"]
    assert last.get_column("cumulative_default_rate").to_list() == pytest.approx([0.5, 0.0])


def test_cumulative_default_curve_by_vintage_needs_dates():
    # setup
    perf = history(BOOK)
    # run / assert
    with pytest.raises(InvalidDataError, match="origination_date.*by_vintage=False"):
        cumulative_default_curve(perf, by_vintage=True)


def test_time_to_default_quantiles_and_histogram():
    # setup
    perf = history({
        "a": ["current", "dpd30", "dpd60", "default"],
        "b": ["current", "dpd30", "dpd60", "dpd90", "current", "dpd30", "default"],
        "c": ["current", "current"],
    })
    # run
    ttd = time_to_default(perf)
    # assert
    assert ttd["n_defaults"] == 2
    assert ttd["default_share"] == pytest.approx(2 / 3)
    assert ttd["quantiles"]["p50"] == pytest.approx(5.5)
    assert ttd["histogram"]["counts"] == [0, 0, 0, 1, 0, 0, 1]


def test_prepayment_curve_smm_and_cpr():
    # setup
    perf = history(BOOK)
    # run
    curve = prepayment_curve(perf)
    # assert: month 3 has 3 active loans (a, b, c) of which b prepays
    month3 = curve.filter(pl.col("months_on_book") == 3).row(0, named=True)
    assert month3["active"] == 3 and month3["prepaid"] == 1
    assert month3["smm"] == pytest.approx(1 / 3)
    assert month3["cpr"] == pytest.approx(1 - (2 / 3) ** 12)
    assert month3["cumulative_prepaid_rate"] == pytest.approx(1 / 3)


def test_compare_sequences_passes_for_identical_books():
    # setup
    perf = history(BOOK)
    # run
    fidelity = compare_sequences(perf, perf, min_row_transitions=1)
    # assert
    assert fidelity.passed
    assert fidelity.cdr12_relative_diff == 0.0
    assert fidelity.horizon == 4
    assert fidelity.to_dict()["passed"] is True


def test_compare_sequences_fails_on_default_rate_and_transition_rows():
    # setup: 20 real loans, 2 default by month 3; the synthetic book defaults 3 and misses payments more often
    real = {f"r{i}": ["current", "current", "current"] for i in range(18)}
    real.update({"r18": ["current", "dpd30", "default"], "r19": ["current", "dpd30", "default"]})
    synth = {f"s{i}": ["current", "current", "current"] for i in range(14)}
    synth.update({f"s{i}": ["current", "dpd30", "default"] for i in range(14, 17)})
    synth.update({f"s{i}": ["current", "dpd30", "dpd60"] for i in range(17, 20)})
    # run
    fidelity = compare_sequences(history(real), history(synth), min_row_transitions=1, noise_allowance=False)
    # assert
    assert fidelity.real_cdr == pytest.approx(0.10) and fidelity.synthetic_cdr == pytest.approx(0.15)
    assert fidelity.cdr12_relative_diff == pytest.approx(0.5)
    assert not fidelity.passed_cdr12
    assert not fidelity.passed_transitions
    assert not fidelity.passed
    assert any("current" in f for f in fidelity.failures)


def test_compare_sequences_within_thresholds_passes():
    # setup: 1 in 10 defaults in both books; the synthetic book's current row shifts by 0.01 per cell
    real = {f"r{i}": ["current"] * 3 for i in range(90)}
    real.update({f"r{i}": ["current", "dpd30", "default"] for i in range(90, 100)})
    synth = dict(real)
    synth.update({f"x{i}": ["current", "current", "prepaid"] for i in range(2)})
    # run
    fidelity = compare_sequences(history(real), history(synth), min_row_transitions=1)
    # assert
    assert fidelity.transition_distance["max"] <= 0.02
    assert fidelity.cdr12_relative_diff <= 0.10
    assert fidelity.passed


def test_compare_sequences_does_not_judge_thin_rows():
    # setup: the dpd30 row differs completely but has only 2 real transitions
    real = {f"r{i}": ["current"] * 3 for i in range(98)}
    real.update({"r98": ["current", "dpd30", "current"], "r99": ["current", "dpd30", "current"]})
    synth = {f"r{i}": ["current"] * 3 for i in range(98)}
    synth.update({"r98": ["current", "dpd30", "dpd60"], "r99": ["current", "dpd30", "dpd60"]})
    # run
    fidelity = compare_sequences(history(real), history(synth), min_row_transitions=100)
    # assert
    assert fidelity.judged_states == ["current"]
    assert fidelity.transition_distance["per_state"]["dpd30"] > 0.02
    assert fidelity.passed_transitions


def test_loan_paths_round_trip_through_frame():
    # setup
    perf = history(BOOK)
    # run
    paths = loan_paths(perf, ["d", "a", "b", "c"], 4)
    frame = paths_to_frame(paths.loan_ids, paths.states, paths.balance, paths.payment, [0.0] * 7)
    # assert
    assert paths.lengths.tolist() == [1, 4, 3, 4]
    assert frame.sort(["loan_id", "period"]).select("loan_id", "period", "status").equals(
        perf.sort(["loan_id", "period"]).select("loan_id", "period", "status")
    )


def test_a_loan_without_an_origination_date_gets_no_reporting_month_rather_than_a_crash():
    # setup: under DP every column is nullable, so a synthetic loan can have a null origination date
    perf = history(BOOK)
    paths = loan_paths(perf, ["d", "a", "b", "c"], 4)
    origination = pl.Series([date(2020, 1, 15), None, date(2020, 3, 1), date(2021, 12, 5)], dtype=pl.Date)
    # run
    frame = paths_to_frame(paths.loan_ids, paths.states, paths.balance, paths.payment, [0.0] * 7,
                           origination=origination, offset=1)
    # assert
    months = dict(frame.filter(pl.col("period") == 1).select("loan_id", "reporting_month").iter_rows())
    assert months == {"d": date(2020, 2, 1), "a": None, "b": date(2020, 4, 1), "c": date(2022, 1, 1)}


def test_noise_allowance_passes_chance_differences_and_still_fails_real_ones():
    # setup: 400 loans per book; 10% vs 12% default is within sampling noise at this size, 10% vs 25% is not
    real = {f"r{i}": ["current"] * 3 for i in range(360)}
    real.update({f"r{i}": ["current", "dpd30", "default"] for i in range(360, 400)})
    close = {f"s{i}": ["current"] * 3 for i in range(352)}
    close.update({f"s{i}": ["current", "dpd30", "default"] for i in range(352, 400)})
    far = {f"f{i}": ["current"] * 3 for i in range(300)}
    far.update({f"f{i}": ["current", "dpd30", "default"] for i in range(300, 400)})
    # run
    strict = compare_sequences(history(real), history(close), min_row_transitions=1, noise_allowance=False)
    lenient = compare_sequences(history(real), history(close), min_row_transitions=1)
    wrong = compare_sequences(history(real), history(far), min_row_transitions=1)
    # assert
    assert not strict.passed_cdr12  # 20% relative, above the fixed 10%
    assert lenient.passed_cdr12 and lenient.effective_thresholds["cdr12_relative"] > 0.2
    assert not wrong.passed_cdr12 and not wrong.passed


# --------------------------------------------------------------------------- the tape's vocabulary


def test_released_history_speaks_the_files_vocabulary():
    # setup: a lender's file (ID, month "2019-03", STATUS C/30/60/CO, dpd; no balance, no payment) read at ingest,
    # and a synthetic history in canonical form as the models write it
    from models.tape.performance import read_performance
    from models.sequences.histories import render_history

    loans = pl.DataFrame({"ID": [1, 2, 3]})
    raw = pl.DataFrame(
        {
            "ID": [1, 1, 1, 1, 2, 2, 3],
            "month": ["2019-03", "2019-04", "2019-05", "2019-06", "2019-08", "2019-09", "2020-01"],
            "STATUS": ["C", "30", "60", "CO", "C", "C", "30"],
            "dpd": [0, 33, 61, 150, 0, 12, 40],
        }
    )
    real = read_performance(raw, loans, tenant="bank", file="performance.csv", loan_id_column="ID", mapping={})
    synthetic = paths_to_frame(
        np.array(["10", "11"], dtype=object),
        np.array([[0, 1, 2, 4], [0, 0, -1, -1]]),
        np.full((2, 4), np.nan),
        np.full((2, 4), np.nan),
        [0.0, 36.0, 61.0, 90.0, 150.0, 0.0, 0.0],
        amounts=(),
    )
    # run
    released = render_history(synthetic, real.vocabulary, seed=0)
    # assert: the file's names, spellings and forms; dpd30 comes back as "30", not "dpd30"
    assert released.columns == ["ID", "month", "STATUS", "dpd"]
    assert released.schema["ID"] == pl.Int64 and released.schema["dpd"] == pl.Int64
    assert released.get_column("STATUS").to_list() == ["C", "30", "60", "CO", "C", "C"]
    months = released.get_column("month").to_list()
    assert all(len(m) == 7 and m[4] == "-" for m in months)
    assert set(months[:1] + months[4:5]) <= {"2019-03", "2019-08", "2020-01"}  # first months drawn from the real ones
    assert months[1] > months[0] and months[5] > months[4]
    # read back like an upload, the release gives the same canonical history
    again = read_performance(released, pl.DataFrame({"ID": [10, 11]}), tenant="bank", file="performance.csv", loan_id_column="ID", mapping={})
    assert again.frame.select("loan_id", "period", "status").equals(synthetic.select("loan_id", "period", "status"))


def test_under_dp_a_released_history_never_reads_the_real_loans_first_months():
    # setup: a file that writes months ("2019-03") and synthetic loans without a reporting month (no origination
    # date): outside DP each draws a first month from the real loans' own; under DP those are an uncharged statistic
    from models.tape.performance import read_performance
    from models.sequences.histories import render_history

    raw = pl.DataFrame({"ID": [1, 1, 2, 3], "month": ["2019-03", "2019-04", "2019-08", "2020-01"], "STATUS": ["C"] * 4})
    real = read_performance(raw, pl.DataFrame({"ID": [1, 2, 3]}), tenant="bank", file="performance.csv",
                            loan_id_column="ID", mapping={})
    other = {**real.vocabulary, "period": {**real.vocabulary["period"], "starts": {"24000": 5}}}  # another real book
    synthetic = paths_to_frame(np.array(["10", "11", "12"], dtype=object), np.array([[0, 0, 0], [0, 0, -1], [0, -1, -1]]),
                               np.full((3, 3), np.nan), np.full((3, 3), np.nan), [0.0] * 7, amounts=())
    # run
    capped = [render_history(synthetic, vocabulary, seed=3, private=True, as_of="2021-06") for vocabulary in (real.vocabulary, other)]
    undeclared = render_history(synthetic, real.vocabulary, seed=3, private=True)
    # assert: the real first months change nothing; every history ends by the declared cut-off, the longest at it
    assert capped[0].equals(capped[1])
    months = capped[0].get_column("month").to_list()
    assert max(months) == "2021-06" and min(months) >= "2021-04"
    assert undeclared.get_column("month").to_list() == [1, 2, 3, 1, 2, 1]  # no public month: the month on book


def test_released_history_keeps_an_integer_index_and_the_files_own_columns():
    # setup: a zero-based month index, a numeric status (months behind) and a balance column named as the lender names it
    from models.tape.performance import read_performance
    from models.sequences.histories import render_history

    loans = pl.DataFrame({"loan_id": ["a", "b"]})
    raw = pl.DataFrame({"loan_id": ["a", "a", "b"], "mob": [0, 1, 0], "delinquency_status": [0, 1, 0], "upb": [100.0, 95.0, 50.0]})
    real = read_performance(raw, loans, tenant="bank", file="performance.csv", loan_id_column="loan_id", mapping={})
    # run
    released = render_history(real.frame, real.vocabulary)
    # assert
    assert released.columns == ["loan_id", "mob", "delinquency_status", "upb"]
    assert released.get_column("mob").to_list() == [0, 1, 0]
    assert released.get_column("delinquency_status").to_list() == [0, 1, 0]
    assert released.schema["delinquency_status"] == pl.Int64


@pytest.mark.parametrize("columns,expected", [
    ({"issue_d": pl.Date, "earliest_cr_line": pl.Date}, "issue_d"),  # Lending Club: not the first credit line
    ({"Earliest Credit Line": pl.Date, "Loan Start": pl.Date}, "Loan Start"),
    ({"MATURITY_DATE": pl.Date, "FIRST_PAYMENT_DATE": pl.Date}, "FIRST_PAYMENT_DATE"),  # the agencies
    ({"last_pymnt_d": pl.Date, "Disbursement Date": pl.Datetime}, "Disbursement Date"),
    ({"LoanOrigDt": pl.Date, "MaturityDt": pl.Date}, "LoanOrigDt"),
    ({"hardship_start_date": pl.Date, "PromoStartDt": pl.Date, "LoanOrigDt": pl.Date}, "LoanOrigDt"),
    ({"oldest_trade_open_date": pl.Date, "FundDt": pl.Date}, "FundDt"),
    ({"origination_date": pl.String, "Disbursed On": pl.Date}, "Disbursed On"),
    ({"refund_date": pl.Date, "close_date": pl.Date}, None),  # a refund's 'fund' is no funding
    ({"origination_year": pl.Int64}, None),  # a number, not a date
], ids=["lending-club", "servicer", "agency", "disbursement", "camel-case", "tiers", "another-event", "text-named-right",
        "none", "not-a-date"])
def test_the_origination_date_is_found_by_the_words_of_its_name(columns, expected):
    # setup / run
    from models.sequences.histories import origination_column

    found = origination_column(pl.DataFrame(schema=columns))
    # assert
    assert found == expected
