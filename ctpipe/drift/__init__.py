"""Data drift: a reference profile stored at training time against the current window.

The monitor (a CronJob) and the pipeline's drift step are fresh processes, so this package
imports numpy and pyarrow only: no pandas, no scipy (the p-values come from closed forms,
see stats.ks_p_value and stats.chi2_sf), and evidently only inside report.page.

Modules:
  stats    the statistics (KS, Wasserstein, PSI, chi-square, Jensen-Shannon, Holm), their
           survival functions, and how a column's values enter them (nulls, text categories)
  profile  the reference profile and its .npz format, thresholds calibrated on the
           training data, and the training snapshot stored with a model (profile, sample)
           and handed to the drift report
  check    per-column and dataset verdicts (DriftReport) under config.DriftSettings, the
           one settings class (it is `monitor.drift` in the config)
  report   the evidently page for people: the only importer of evidently

The names below are the package's API. Modules inside it import their siblings
(`from ctpipe.drift.stats import ...`), never this file. `compare` (in check) is the
check itself: a window against a profile, under the settings.
"""

from ctpipe.config import DriftSettings
from ctpipe.drift.check import ColumnDrift, DriftReport, compare, read_window, unseen
from ctpipe.drift.profile import (
    CATEGORICAL,
    MAX_CALIBRATION_WINDOWS,
    NUMERIC,
    PROFILE_VERSION,
    Calibration,
    CategoricalReference,
    NumericReference,
    ReferenceProfile,
    build_profile,
    build_profile_from_table,
    calibrate,
    robust_limit,
)
from ctpipe.drift.stats import (
    WASSERSTEIN_MIN_SCALE,
    chi2_sf,
    holm,
    kolmogorov_sf,
    ks_p_value,
    ks_statistic,
    wasserstein,
)

__all__ = [
    "CATEGORICAL",
    "MAX_CALIBRATION_WINDOWS",
    "NUMERIC",
    "PROFILE_VERSION",
    "WASSERSTEIN_MIN_SCALE",
    "Calibration",
    "CategoricalReference",
    "ColumnDrift",
    "DriftReport",
    "DriftSettings",
    "NumericReference",
    "ReferenceProfile",
    "build_profile",
    "build_profile_from_table",
    "calibrate",
    "chi2_sf",
    "compare",
    "holm",
    "kolmogorov_sf",
    "ks_p_value",
    "ks_statistic",
    "read_window",
    "robust_limit",
    "unseen",
    "wasserstein",
]
