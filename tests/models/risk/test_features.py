"""Tests of models.risk.features: which columns become model inputs, and how."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from models.risk.features import FeaturePipeline
from tests.models.risk.conftest import schema_of


def test_feature_pipeline_types_and_leaves_out_the_right_columns(book):
    loans = book["train"].with_columns(
        pl.lit("a long free text note about the borrower and the loan").alias("notes"),
        pl.lit(1).alias("constant"),
    )
    schema = schema_of(loans)

    pipeline = FeaturePipeline.fit(loans, schema)

    assert pipeline.dropped["loan_id"] == "identifier"
    assert pipeline.dropped["borrower_id"] == "identifier"
    assert pipeline.dropped["notes"] == "free text"
    assert pipeline.dropped["constant"] == "constant"
    assert "default_flag" not in pipeline.names
    kinds = {f.name: f.kind for f in pipeline.features}
    assert kinds["origination_date"] == "numeric" and kinds["product"] == "categorical"
    x = pipeline.matrix(loans.head(3))
    year = x[:, pipeline.names.index("origination_date")]
    assert np.all((year > 2018) & (year < 2022))  # dates become decimal years
    assert FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict()))) == pipeline


def test_boolean_features_read_alike_as_flags_numbers_and_words(book):
    train = book["train"].with_columns((pl.col("credit_score") < 600).alias("thin_file"))
    schema = schema_of(train)
    pipeline = FeaturePipeline.fit(train, schema)
    j = pipeline.names.index("thin_file")
    assert pipeline.features[j].kind == "categorical" and set(pipeline.features[j].levels) == {"true", "false"}

    as_flags = pl.DataFrame({"thin_file": [True, False, None]})
    as_numbers = pl.DataFrame({"thin_file": [1, 0, None]})
    as_words = pl.DataFrame({"thin_file": [" Yes", "no", None]})
    single = FeaturePipeline(features=[pipeline.features[j]])

    expected = single.matrix(as_flags)
    np.testing.assert_array_equal(single.matrix(as_numbers), expected)
    np.testing.assert_array_equal(single.matrix(as_words), expected)
    assert np.isnan(expected[2, 0]) and expected[0, 0] != expected[1, 0]


def test_split_column_name_matches_the_tape():
    from models.risk import features
    from models.tape import loan_tape

    assert features.SPLIT_COLUMN == loan_tape.SPLIT_COLUMN


def test_a_time_zone_aware_date_is_read_as_a_date_whether_it_comes_typed_or_as_text(book):
    # setup: a SQL export's Parquet keeps a timestamp with its time zone (UTC); MLflow's serving example sends it as
    # text with its offset ('2019-08-17 00:00:00+00:00'), which polars refused: "a time zone is part of the data"
    # (risk_model failed while it logged the model)
    loans = book["train"].with_columns(
        pl.col("origination_date").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("origination_date"))
    pipeline = FeaturePipeline.fit(loans, schema_of(loans))
    as_text = loans.head(5).with_columns(
        pl.col("origination_date").dt.strftime("%Y-%m-%d %H:%M:%S%:z").alias("origination_date"))
    # run
    typed, sent = pipeline.matrix(loans.head(5)), pipeline.matrix(as_text)
    # assert: the same decimal years either way
    j = pipeline.names.index("origination_date")
    assert np.all((typed[:, j] > 2018) & (typed[:, j] < 2022))
    assert np.allclose(typed[:, j], sent[:, j])
