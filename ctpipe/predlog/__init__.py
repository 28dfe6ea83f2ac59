"""The prediction log: what a model served, and the labels that arrive later.

Layout, under a local directory or an s3:// prefix:

    <root>/<model_name>/date=YYYY-MM-DD/part-<UTC yyyymmddTHHMMSSffffff>-<hex>.parquet
    <root>/<model_name>/date=YYYY-MM-DD/compact-<UTC yyyymmddTHHMMSSffffff>-<hex>.parquet
    <labels_root>/<model_name>/part-<UTC yyyymmddTHHMMSSffffff>-<hex>.parquet

The date folder is the UTC date of the rows' own timestamps, not of the write, so a read
for a time window opens only the folders that window covers. Writers only ever add files
(ctpipe.predlog.writer: journaled, one file per date every 5 minutes or 64 MiB);
compaction (ctpipe.predlog.compact) merges a folder's small files into one, and readers
skip the files a compact file replaced (ctpipe.predlog.files). Files outside `date=`
folders are not part of the log and are skipped.

Each row has a role (ctpipe.predlog.format): `champion` or `canary` for the answers
callers got, `shadow` for a second model's answer to the same request. Readers return the
answers by default, shadow rows only when asked for.

A request id is answered once; should it appear twice (a journal replayed over a file
that was already written, a client that reuses ids), readers keep its first prediction
(and its first shadow row apart from it). A
request has one true outcome: label rows for one id that disagree are an error naming the
id and the files; identical ones are harmless.

Modules: format (records, columns, types), files (names, atomic writes, footers),
writer and journal (serving's side), reader (the monitor's and simulate's side), compact
(`ctpipe log compact`), distinct (request-id checks at scale). Serving and the monitor
both import this package; neither imports the other.
"""

from ctpipe.predlog.files import DATE_FOLDER_PREFIX, PARQUET_SUFFIX, PART_PREFIX, date_folder
from ctpipe.predlog.format import (
    ALL_PREDICTION_COLUMNS,
    FEATURES,
    LABEL,
    LABEL_SCHEMA,
    LABELLED_AT,
    MODEL_NAME,
    MODEL_VERSION,
    PREDICTION,
    PREDICTION_TYPES,
    REQUEST_ID,
    REQUIRED_LABEL_COLUMNS,
    REQUIRED_PREDICTION_COLUMNS,
    ROLE,
    ROLE_CANARY,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    ROLES,
    SCORE,
    SERVED_ROLES,
    TIMESTAMP,
    TIMESTAMP_TYPE,
    Label,
    Logged,
    Prediction,
    PredictionBatch,
    feature_array,
    prediction_text,
    text_array,
)
from ctpipe.predlog.reader import (
    LabelledPredictions,
    empty_predictions,
    features_table,
    join_labels,
    logged_predictions,
    read_history_and_window,
    read_labels,
    read_predictions,
)
from ctpipe.predlog.writer import MAX_RETRY_SECONDS, PredictionLogWriter, write_labels

__all__ = [
    "ALL_PREDICTION_COLUMNS",
    "DATE_FOLDER_PREFIX",
    "FEATURES",
    "LABEL",
    "LABELLED_AT",
    "LABEL_SCHEMA",
    "MAX_RETRY_SECONDS",
    "MODEL_NAME",
    "MODEL_VERSION",
    "PARQUET_SUFFIX",
    "PART_PREFIX",
    "PREDICTION",
    "PREDICTION_TYPES",
    "REQUEST_ID",
    "REQUIRED_LABEL_COLUMNS",
    "REQUIRED_PREDICTION_COLUMNS",
    "ROLE",
    "ROLES",
    "ROLE_CANARY",
    "ROLE_CHAMPION",
    "ROLE_SHADOW",
    "SCORE",
    "SERVED_ROLES",
    "TIMESTAMP",
    "TIMESTAMP_TYPE",
    "Label",
    "LabelledPredictions",
    "Logged",
    "Prediction",
    "PredictionBatch",
    "PredictionLogWriter",
    "date_folder",
    "empty_predictions",
    "feature_array",
    "features_table",
    "join_labels",
    "logged_predictions",
    "prediction_text",
    "read_history_and_window",
    "read_labels",
    "read_predictions",
    "text_array",
    "write_labels",
]
