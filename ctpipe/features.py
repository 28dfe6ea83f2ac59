"""The feature transformer, built from the schema and kept inside every model.

Because the ColumnTransformer is the first stage of the model's sklearn Pipeline, the
served model applies exactly the transformations it was trained with: there is no
separate feature code to drift apart.

Registered models carry this module (ctpipe.registry ships the modules a model's pickle
needs), so it imports only numpy and pandas when it loads: the schema is for type checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ctpipe.data.schema import Schema

MISSING_CATEGORY = "__missing__"
MAX_ONE_HOT = 32  # categories beyond this (or rarer than MIN_FREQUENCY) share one column
MIN_FREQUENCY = 5


def as_float(frame: Any) -> Any:
    """Numeric columns as float: nullable ints, booleans and numeric text all arrive here."""
    import pandas as pd

    if isinstance(frame, pd.DataFrame):
        return frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    return np.asarray(frame, dtype="float64")


def as_text(frame: Any) -> Any:
    """Categorical columns as text, with nulls as one explicit category.

    The same value must reach the encoder whether it was read as 3 from Parquet or "3"
    from a JSON request.
    """
    import pandas as pd

    frame = pd.DataFrame(frame)
    return frame.astype("object").where(frame.notna(), MISSING_CATEGORY).map(_category_text)


def _category_text(value: Any) -> str:
    # An integer column with a null reaches pandas as float64: its 3 arrives as 3.0.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def build_preprocessor(schema: Schema) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    parts = []
    if schema.numeric_features:
        numeric = Pipeline(
            [
                ("to_float", FunctionTransformer(as_float, feature_names_out="one-to-one")),
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        parts.append(("numeric", numeric, schema.numeric_features))
    if schema.categorical_features:
        categorical = Pipeline(
            [
                ("to_text", FunctionTransformer(as_text, feature_names_out="one-to-one")),
                (
                    "one_hot",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=MIN_FREQUENCY,
                        max_categories=MAX_ONE_HOT,
                        sparse_output=False,
                    ),
                ),
            ]
        )
        parts.append(("categorical", categorical, schema.categorical_features))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def build_model(schema: Schema, estimator: Any) -> Any:
    """The full model: features, then the estimator, as one sklearn Pipeline."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("features", build_preprocessor(schema)), ("model", estimator)])
