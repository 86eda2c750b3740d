"""Tests for models.tape.split: the train/holdout split is deterministic, stable across versions and checked."""

from __future__ import annotations

import polars as pl
import pytest

from models.errors import InvalidDataError
from models.tape.split import split_train_holdout


def test_split_is_deterministic_and_near_the_requested_share() -> None:
    # setup
    ids = pl.DataFrame({"loan_id": [f"L{i:07d}" for i in range(10_000)]})
    # run
    first = split_train_holdout(ids, "loan_id")
    again = split_train_holdout(ids.reverse(), "loan_id").reverse()
    subset = split_train_holdout(ids.head(100), "loan_id")
    other = split_train_holdout(ids, "loan_id", holdout_share=0.35)
    # assert
    assert first.name == "split" and first.dtype == pl.String
    assert set(first.unique().to_list()) == {"train", "holdout"}
    assert abs((first == "holdout").mean() - 0.2) < 0.01
    assert abs((other == "holdout").mean() - 0.35) < 0.01
    assert first.equals(again)
    assert subset.equals(first.head(100))


def _reference_unit_hash(text: str, salt: str = "credittwin") -> float:
    """FNV-1a 64 then MurmurHash3's fmix64, byte by byte from the published definitions."""
    mask = (1 << 64) - 1
    value = 0xCBF29CE484222325
    for byte in salt.encode("utf-8") + b"\x00" + text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & mask
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & mask
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & mask
    value ^= value >> 33
    return (value >> 11) / float(1 << 53)


def test_split_matches_the_published_hash_and_ignores_id_type() -> None:
    # setup: ids of different lengths, non-ASCII and empty
    ids = ["L0000001", "L0000002", "L0000003", "a-much-longer-loan-identifier-0004", "é-ü", "", "7"]
    expected = ["holdout" if _reference_unit_hash(i) < 0.5 else "train" for i in ids]
    # run
    split = split_train_holdout(pl.DataFrame({"loan_id": ids}), "loan_id", holdout_share=0.5).to_list()
    as_int = split_train_holdout(pl.DataFrame({"id": list(range(200))}), "id")
    as_text = split_train_holdout(pl.DataFrame({"id": [str(i) for i in range(200)]}), "id")
    salted = split_train_holdout(pl.DataFrame({"id": [str(i) for i in range(200)]}), "id", salt="other")
    # assert
    assert split == expected
    assert {"train", "holdout"} <= set(split)
    assert as_int.equals(as_text)
    assert not salted.equals(as_text)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, float("nan")])
def test_split_refuses_a_bad_share(share: float) -> None:
    # setup
    ids = pl.DataFrame({"loan_id": ["a", "b"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"holdout share must be strictly between 0 and 1.*Fix: set holdout_share"):
        split_train_holdout(ids, "loan_id", holdout_share=share)


def test_split_refuses_null_ids() -> None:
    # setup
    ids = pl.DataFrame({"loan_id": ["a", None]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'loan_id': 1 rows have no loan id"):
        split_train_holdout(ids, "loan_id")
