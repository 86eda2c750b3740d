"""Reading back the generalised labels k-anonymity writes."""

from __future__ import annotations

import math

import pytest

from models.privacy.labels import CategoryGroup, NumericRange, parse_generalised_label


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("[30, 45)", NumericRange(30.0, 45.0, True, False)),
        ("(-inf, 5]", NumericRange(-math.inf, 5.0, False, True)),
        ("[1e3, inf)", NumericRange(1000.0, math.inf, True, False)),
        ("< 30", NumericRange(-math.inf, 30.0, False, False)),
        (">= 45000", NumericRange(45000.0, math.inf, True, False)),
        ("north|south", CategoryGroup(frozenset({"north", "south"}))),
        ("*", CategoryGroup(None)),
        ("*|(missing)", CategoryGroup(None)),
        ("north", None),
        ("(missing)", None),
        (42, None),
    ],
)
def test_parse_generalised_label_reads_ranges_groups_and_plain_values(label, expected):
    # run
    parsed = parse_generalised_label(label)
    # assert
    assert parsed == expected


def test_parse_generalised_label_reads_date_edges_as_days_since_1970():
    # run
    parsed = parse_generalised_label("[1970-01-11, 1970-02-01)")
    # assert
    assert parsed == NumericRange(10.0, 31.0, True, False)
    assert parsed.contains(10.0) and not parsed.contains(31.0)
    assert parsed.distance(40.0) == pytest.approx(9.0)
