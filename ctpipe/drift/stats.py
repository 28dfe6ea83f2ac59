"""Drift statistics: two-sample tests and distances, their survival functions, and how a
column's values enter them. numpy and pyarrow only (see ctpipe.drift).

A check reads the current window, sorts each numeric column once and derives every
statistic from that sorted array and the profile's pre-sorted reference values, without
merging the two.

Per column (nulls, NaN and ±inf are left out of every statistic; their shares are reported):

  numeric      ks                two-sample Kolmogorov–Smirnov D, exact
               ks_p_value        asymptotic p-value (see `ks_p_value`)
               wasserstein_norm  Wasserstein-1 / reference standard deviation (population)
               psi               population stability index on reference-quantile bins
  categorical  chi2, chi2_p_value  chi-square test of homogeneity on the 2 x K table of
                                   reference and current counts (no continuity correction)
               jensen_shannon      Jensen–Shannon distance, natural log (scipy's default)
               psi                 population stability index over the categories

Where this differs from evidently 0.7 (`evidently.legacy.calculations.stattests`):

- chi-square: evidently's "chisquare" is a goodness-of-fit test that takes the reference
  shares as exact; here both windows are samples (the issue asks for the contingency
  table). The statistic is about n_ref / (n_ref + n_cur) of evidently's, so p-values are
  larger unless the reference is much bigger than the current window. Unlike
  `scipy.stats.chi2_contingency`'s default, no Yates correction is applied when K = 2.
- KS p-value: evidently calls `ks_2samp` with method "auto", which is exact below 10,000
  rows; here it is always asymptotic (see `ks_p_value` for the accuracy).
- numeric PSI bins: evidently uses Sturges equal-width bins over reference ∪ current (or one
  bin per value below 21 distinct reference values); here `psi_bins` reference-quantile bins,
  open at both ends, which is the textbook PSI and needs no pass over the data. The empty-bin
  epsilon is evidently's. Categorical PSI matches evidently's exactly.
- numeric columns with <= 5 distinct values: evidently silently switches them to
  Jensen–Shannon over the values; here a numeric column is always scored by Wasserstein.
  Declare such a column categorical to get evidently's behaviour.

Categories are compared by their text form (`str(value)`, whole floats as integers), so a
profile built from numpy arrays matches a check on Arrow data, and 3, 3.0 and "3" are one
category whichever way a prediction log stored them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ctpipe.errors import DataError

# Statistic keys in ColumnDrift.statistics.
KS = "ks"
KS_P_VALUE = "ks_p_value"
WASSERSTEIN_NORM = "wasserstein_norm"
CHI2 = "chi2"
CHI2_P_VALUE = "chi2_p_value"
JENSEN_SHANNON = "jensen_shannon"
PSI = "psi"

# evidently's floor under the reference standard deviation: a constant reference column
# (std 0) divides by this instead, so any change of more than ~1e-4 on average is drift.
WASSERSTEIN_MIN_SCALE = 0.001

Float64Array = npt.NDArray[np.float64]

_ARROW_NUMERIC = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_decimal,
)


# ---------------------------------------------------------------------------- statistics


_KS_BLOCK = 64  # every 64th value of each sample is a point of the coarse grid


def ks_statistic(a: Float64Array, b: Float64Array) -> float:
    """sup |F_a - F_b| of two sorted samples, bit for bit as scipy.stats.ks_2samp.

    Between two neighbouring grid points x < y, a value v has #a(<= x) <= #a(<= v) <=
    #a(< y), and so for b: that bounds the gap inside. Only intervals whose bound reaches
    the largest gap seen at a grid point are evaluated value by value. When that is a large
    share of the data (near-identical samples: the gap is flat), one linear merge of the
    two samples is cheaper.
    """
    n1, n2 = len(a), len(b)
    grid = np.concatenate((a[_KS_BLOCK - 1 :: _KS_BLOCK], b[_KS_BLOCK - 1 :: _KS_BLOCK]))
    grid.sort()
    # Counts at the grid points, framed by -inf (nothing below) and +inf (everything).
    a_le = _framed(np.searchsorted(a, grid, side="right"), n1)
    b_le = _framed(np.searchsorted(b, grid, side="right"), n2)
    a_lt = _framed(np.searchsorted(a, grid, side="left"), n1)
    b_lt = _framed(np.searchsorted(b, grid, side="left"), n2)
    # The gap F_a - F_b scaled by n1 * n2 is an exact integer.
    gap = np.abs(a_le * n2 - b_le * n1)
    best = int(gap.max())
    bound = np.maximum(a_lt[1:] * n2 - b_le[:-1] * n1, b_lt[1:] * n1 - a_le[:-1] * n2)
    # >= rather than >: ks_2samp's float D can differ in the last bit between points of
    # equal exact gap, and it takes the largest.
    open_ = np.flatnonzero(bound > best) if best == 0 else np.flatnonzero(bound >= best)
    a_from, a_to = a_le[open_], a_lt[open_ + 1]
    b_from, b_to = b_le[open_], b_lt[open_ + 1]
    if int((a_to - a_from).sum() + (b_to - b_from).sum()) > (n1 + n2) // 4:
        return _ks_by_merge(a, b)
    values = np.concatenate((a[_ranges(a_from, a_to)], b[_ranges(b_from, b_to)]))
    at_a = np.concatenate((a_le, np.searchsorted(a, values, side="right")))
    at_b = np.concatenate((b_le, np.searchsorted(b, values, side="right")))
    gap = np.abs(at_a * n2 - at_b * n1)
    top = gap == gap.max()
    # scipy's float expression at every point of maximal gap.
    return float(np.max(np.abs(at_a[top] / n1 - at_b[top] / n2)))


def _ks_by_merge(a: Float64Array, b: Float64Array) -> float:
    """ks_statistic by one linear merge of the two sorted samples (timsort on their
    concatenation), evaluating the CDF gap at every value."""
    n1, n2 = len(a), len(b)
    total = n1 + n2
    both = np.concatenate((a, b))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both
    # With c_k values of b among the first k + 1 merged ones,
    #   F_a - F_b = (k + 1 - c_k) / n1 - c_k / n2 = -(n1 + n2) / (n1 n2) * t_k,
    #   t_k = c_k - (k + 1) * n2 / (n1 + n2)   (exact t_k are multiples of 1 / total).
    index = np.int32 if total < 2**31 else np.int64  # int32: a cumsum five times faster
    cum_b = np.cumsum(order >= n1, dtype=index)
    del order
    t = np.arange(1, total + 1, dtype=np.float64)
    t *= n2 / total
    np.subtract(cum_b, t, out=t)
    np.abs(t, out=t)
    # Inside a run of equal values no CDF is evaluated: only at its last member.
    t[:-1][np.diff(merged) == 0] = -1.0
    top = np.flatnonzero(t >= t.max() - 0.5 / total)
    c_k = cum_b[top].astype(np.float64)
    return float(np.max(np.abs((top + 1 - c_k) / n1 - c_k / n2)))


def _framed(counts: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.int64]:
    return np.concatenate(([0], counts, [n])).astype(np.int64, copy=False)


def _ranges(starts: npt.NDArray[np.int64], stops: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The concatenation of arange(start, stop) for each pair."""
    lengths = np.maximum(stops - starts, 0)
    total = int(lengths.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def wasserstein(a: Float64Array, b: Float64Array) -> float:
    """Wasserstein-1 distance of two sorted samples: the area between their quantile
    functions, as scipy.stats.wasserstein_distance(a, b)."""
    n1, n2 = len(a), len(b)
    if n1 == n2:
        diff = a - b
        np.abs(diff, out=diff)
        return float(diff.sum()) / n1
    if n2 > n1:
        a, b, n1, n2 = b, a, n2, n1
    # Quantile step i of a covers u in (i/n1, (i+1)/n1]; b's step is no shorter, so b's
    # quantile there is b[low] and, if one of b's steps ends inside, b[low + 1] after it.
    # Lengths in units of 1 / (n1 n2), so they are exact integers.
    i_n2 = np.arange(0, n1 * n2, n2, dtype=np.int64)
    low = i_n2 // n1
    first = (low + 1) * n1 - i_n2
    del i_n2
    np.minimum(first, n2, out=first)
    high = low + (first < n2)
    area = np.abs(a - b[low])
    area *= first
    second = np.abs(a - b[high])
    second *= n2 - first
    area += second
    return float(area.sum()) / (float(n1) * float(n2))


def _numeric_psi(ref: Float64Array, cur: Float64Array, bins: int) -> float:
    n1 = len(ref)
    edges = np.unique(_quantiles(ref, np.arange(1, bins) / bins))
    # Bins (-inf, e1], (e1, e2], ..., (e_last, inf): values beyond the reference count too.
    ref_counts = np.diff(np.searchsorted(ref, edges, side="right"), prepend=0, append=n1)
    cur_counts = np.diff(np.searchsorted(cur, edges, side="right"), prepend=0, append=len(cur))
    return psi(ref_counts / n1, cur_counts / len(cur))


def _quantiles(ordered: Float64Array, q: Float64Array) -> Float64Array:
    """np.quantile(values, q) (method "linear") of sorted values, bit for bit, without
    np.quantile's partition pass over the data."""
    n = len(ordered)
    virtual = (n - 1) * q
    low = np.floor(virtual)
    gamma = virtual - low
    below = low.astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    a, b = ordered[below], ordered[above]
    step = b - a
    return np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)


def chi_square(ref_counts: Float64Array, cur_counts: Float64Array) -> float:
    """Pearson's chi-square on the 2 x K table [ref_counts; cur_counts], as
    scipy.stats.chi2_contingency(table, correction=False).statistic."""
    n1, n2 = ref_counts.sum(), cur_counts.sum()
    totals = ref_counts + cur_counts
    keep = totals > 0
    totals, ref_counts, cur_counts = totals[keep], ref_counts[keep], cur_counts[keep]
    expected_ref = totals * (n1 / (n1 + n2))
    expected_cur = totals * (n2 / (n1 + n2))
    return float(
        np.sum((ref_counts - expected_ref) ** 2 / expected_ref)
        + np.sum((cur_counts - expected_cur) ** 2 / expected_cur)
    )


def jensen_shannon(p: Float64Array, q: Float64Array) -> float:
    """Jensen–Shannon distance (natural log) of two count or share vectors, as
    scipy.spatial.distance.jensenshannon(p, q)."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    return math.sqrt(max(float(left.sum() + right.sum()) / 2, 0.0))


def psi(ref_shares: Float64Array, cur_shares: Float64Array) -> float:
    """Population stability index sum((r - c) * ln(r / c)).

    Empty bins get evidently's epsilon: the smallest non-zero share / 1e6 when that share
    is <= 1e-4, else 1e-4 (per side).
    """
    r, c = _fill_empty(ref_shares), _fill_empty(cur_shares)
    return float(np.sum((r - c) * np.log(r / c)))


def _fill_empty(shares: Float64Array) -> Float64Array:
    nonzero = shares[shares > 0]
    if len(nonzero) == len(shares):
        return shares
    smallest = float(nonzero.min())
    return np.where(shares == 0, smallest / 1e6 if smallest <= 1e-4 else 1e-4, shares)


def holm(p_values: Sequence[float] | Float64Array) -> Float64Array:
    """Holm step-down adjusted p-values.

    Sorted ascending, hypothesis i (1-based) is rejected while p_(j) <= alpha / (m - j + 1)
    for every j <= i; equivalently, adjusted p_(i) = max over j <= i of min(1, (m-j+1) p_(j))
    is <= alpha. Controls the chance of any false alarm at alpha, for any dependence.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


class _QuantileDistance:
    """Wasserstein-1 of many small sorted samples against one large sorted reference.

    `wasserstein` walks every reference value, so scoring 50 windows of a million-row
    reference would cost 50 passes over it per column. Here each of the sample's quantile
    steps integrates |Q_ref - b_j| over its stretch in closed form from the reference's
    prefix sums: O(m log n) per sample of m values, the same number up to rounding.
    """

    def __init__(self, reference: Float64Array) -> None:
        # Centred so the prefix sums stay small and their differences keep their digits.
        self.center = float(reference[len(reference) // 2])
        self.values = reference - self.center
        self.prefix = np.concatenate(([0.0], np.cumsum(self.values)))

    def _area(self, t: Float64Array) -> Float64Array:
        """The integral of Q_ref over [0, t / n] times n, Q_ref stepping at the integers."""
        i = np.minimum(t.astype(np.int64), len(self.values) - 1)
        return self.prefix[i] + self.values[i] * (t - i)

    def __call__(self, sample: Float64Array) -> float:
        n1, n2 = len(self.values), len(sample)
        b = sample - self.center
        # The sample's step j spans [j n1 / n2, (j + 1) n1 / n2] in reference ranks, and
        # inside it Q_ref < b_j up to the rank where the reference first reaches b_j.
        edges = np.arange(n2 + 1, dtype=np.int64) * n1 / n2
        low, high = edges[:-1], edges[1:]
        cross = np.clip(np.searchsorted(self.values, b, side="left").astype(np.float64), low, high)
        at_edges, at_cross = self._area(edges), self._area(cross)
        below = b * (cross - low) - (at_cross - at_edges[:-1])
        above = (at_edges[1:] - at_cross) - b * (high - cross)
        return float(np.sum(below + above)) / n1


# ---------------------------------------------------------------------------- p-values
# Closed forms in numpy rather than scipy.special: importing scipy.special costs a fresh
# process about 0.3 s (it pulls in scipy's array-API layer, numpy.testing and numpy.f2py),
# more than a whole 10k-row check. tests/unit/test_drift.py holds them to scipy.special.

_SERIES = np.arange(1, 12, dtype=np.float64)


def kolmogorov_sf(z: float) -> float:
    """P(K > z) for the Kolmogorov distribution, as scipy.special.kolmogorov(z)."""
    if z <= 0:
        return 1.0
    if z < 1.18:
        # Jacobi theta form: converges in a few terms where the alternating series is slow.
        w = math.pi**2 / (8 * z * z)
        cdf = math.sqrt(2 * math.pi) / z * float(np.sum(np.exp(-((2 * _SERIES - 1) ** 2) * w)))
        return min(1.0, max(0.0, 1.0 - cdf))
    terms = np.exp(-2.0 * _SERIES**2 * z * z)
    return min(1.0, max(0.0, 2.0 * float(np.sum(terms[0::2]) - np.sum(terms[1::2]))))


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided asymptotic p-value of the two-sample KS statistic d.

    scipy.stats.ks_2samp(method="asymp") uses the one-sample distribution at
    n = round(n1 n2 / (n1 + n2)). This is the Kolmogorov limit with Vrbik's (2018) small-n
    correction, P(sqrt(n) D > z) ~ K(z + 1/(6 sqrt n) + (z - 1)/(4n)). Against scipy it is
    within 0.003 absolute for any n >= 10, and relative to p within 1% for p >= 1e-6 once
    n >= 2500 (3% at n = 500). Below 1e-6, where no threshold lives, only the exponent is
    meaningful: log10 p agrees within 2% for n >= 2500 (10% at n = 500).
    """
    if d <= 0:
        return 1.0
    n = float(max(1, round(n1 * n2 / (n1 + n2))))  # scipy's n, but never 0 (n1 = n2 = 1)
    z = math.sqrt(n) * d
    return kolmogorov_sf(z + 1 / (6 * math.sqrt(n)) + (z - 1) / (4 * n))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof), as scipy.special.chdtrc(dof, x).

    The regularised upper incomplete gamma Q(dof/2, x/2) has a finite sum for integer and
    half-integer shapes; its terms are positive, so the sum is summed in log space safely.
    """
    if dof <= 0 or x <= 0:
        return 1.0
    h = 0.5 * x
    k = dof // 2
    if dof % 2 == 0:
        # Q(k, h) = exp(-h) * sum_{i<k} h^i / i!
        i = np.arange(k, dtype=np.float64)
        log_factorial = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1.0, k)))))
        log_terms = i * math.log(h) - log_factorial - h
        return min(1.0, float(np.sum(np.exp(log_terms))))
    # Q(k + 1/2, h) = erfc(sqrt h) + exp(-h) * sum_{i=1..k} h^(i - 1/2) / Gamma(i + 1/2)
    tail = math.erfc(math.sqrt(h))
    if k == 0:
        return tail
    i = np.arange(1, k + 1, dtype=np.float64)
    log_gamma = math.lgamma(0.5) + np.cumsum(np.log(i - 0.5))
    log_terms = (i - 0.5) * math.log(h) - log_gamma - h
    return min(1.0, tail + float(np.sum(np.exp(log_terms))))


# ---------------------------------------------------------------------------- input


def _sorted_finite(name: str, values: Any) -> tuple[Float64Array, int]:
    """The column's finite values as a new sorted float64 array, and the column's length."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        floats, length = _arrow_floats(name, values)
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            try:
                array = array.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(
                    f"column {name!r} is numeric in the drift profile but holds {array.dtype} values"
                ) from None
        floats, length = array.astype(np.float64, copy=False), len(array)
    ordered = np.sort(floats)
    # np.sort puts -inf first and +inf, NaN last: the finite values are one slice.
    low = int(np.searchsorted(ordered, -np.inf, side="right"))
    high = int(np.searchsorted(ordered, np.inf, side="left"))
    return ordered[low:high], length


def _arrow_floats(name: str, values: pa.Array | pa.ChunkedArray) -> tuple[Float64Array, int]:
    """The non-null values as float64 (possibly a read-only view), and the length.

    Read from the Arrow buffers: Array.to_numpy() imports pandas and pyarrow.compute
    imports in 80 ms, together half a second of a fresh process.
    """
    if not any(test(values.type) for test in _ARROW_NUMERIC):
        raise DataError(
            f"column {name!r} is numeric in the drift profile but has type {values.type} "
            "in the current data"
        )
    parts = []
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        if not len(chunk):
            continue
        if pa.types.is_boolean(chunk.type):
            raw: np.ndarray = _bits(chunk.buffers()[1], chunk.offset, len(chunk))
        elif chunk.type in _NUMPY_TYPES:
            dtype = np.dtype(_NUMPY_TYPES[chunk.type])
            raw = np.frombuffer(
                chunk.buffers()[1],
                dtype=dtype,
                count=len(chunk),
                offset=dtype.itemsize * chunk.offset,
            )
        else:  # decimals: rare enough to pay for pyarrow.compute
            import pyarrow.compute as pc

            return _arrow_floats(name, pc.cast(values, pa.float64()))
        valid = _valid(chunk)
        parts.append(raw if valid is None else raw[valid])
    if len(parts) == 1:
        return parts[0].astype(np.float64, copy=False), len(values)
    floats = np.concatenate(parts).astype(np.float64, copy=False) if parts else np.empty(0)
    return floats, len(values)


_NUMPY_TYPES: dict[pa.DataType, str] = {
    pa.float64(): "f8",
    pa.float32(): "f4",
    pa.float16(): "f2",
    pa.int8(): "i1",
    pa.int16(): "i2",
    pa.int32(): "i4",
    pa.int64(): "i8",
    pa.uint8(): "u1",
    pa.uint16(): "u2",
    pa.uint32(): "u4",
    pa.uint64(): "u8",
}


def _bits(buffer: pa.Buffer, offset: int, length: int) -> npt.NDArray[np.bool_]:
    """An Arrow bitmap (least significant bit first) as booleans."""
    bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
    return bits[offset : offset + length].view(np.bool_)


def _valid(array: pa.Array) -> npt.NDArray[np.bool_] | None:
    """Which slots of an array hold a value; None when all do."""
    if not array.null_count:
        return None
    return _bits(array.buffers()[0], array.offset, len(array))


def _category_counts(name: str, values: Any) -> tuple[dict[str, int], int]:
    """Counts per category (text form) without nulls or NaN, and the column's length."""
    counts: Counter[str] = Counter()
    pairs: Iterable[tuple[Any, int]]
    if isinstance(values, pa.Array | pa.ChunkedArray) and pa.types.is_dictionary(values.type):
        pairs = _dictionary_counts(values)
    elif isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc  # only here: it takes 80 ms to import

        table = pc.value_counts(values)
        pairs = zip(
            table.field("values").to_pylist(), table.field("counts").to_pylist(), strict=True
        )
    else:
        array = np.asarray(values)
        if array.dtype.kind in "biufUS":
            if array.dtype.kind == "f":
                array = array[~np.isnan(array)]
            keys, numbers = np.unique(array, return_counts=True)
            pairs = zip(keys.tolist(), numbers.tolist(), strict=True)
        else:
            pairs = Counter(array.tolist()).items()
    for key, count in pairs:
        text = _category_text(key)
        if text is not None:
            counts[text] += int(count)
    return dict(counts), len(values)


def _category_text(key: Any) -> str | None:
    """A category's text form; None for a null or NaN."""
    if key is None or (isinstance(key, float) and math.isnan(key)):
        return None
    if isinstance(key, float) and key.is_integer():
        key = int(key)  # 3.0 and 3 are one category: logs that went through JSON vary
    return str(key)


def _dictionary_counts(values: pa.Array | pa.ChunkedArray) -> list[tuple[Any, int]]:
    """(value, count) per dictionary entry: a bincount of the indices, chunk by chunk."""
    pairs: list[tuple[Any, int]] = []
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        indices = chunk.indices
        if not len(indices):
            continue
        width = indices.type.bit_width // 8
        dtype = np.dtype(f"{'i' if pa.types.is_signed_integer(indices.type) else 'u'}{width}")
        codes = np.frombuffer(
            indices.buffers()[1], dtype=dtype, count=len(indices), offset=width * indices.offset
        )
        valid = _valid(indices)
        if valid is not None:
            codes = codes[valid]
        numbers = np.bincount(codes, minlength=len(chunk.dictionary))
        pairs.extend(zip(chunk.dictionary.to_pylist(), numbers.tolist(), strict=True))
    return pairs


def _row_floats(name: str, values: Any) -> Float64Array:
    """One float64 per row, NaN where null, so rows stay aligned with their timestamps."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc

        if not any(test(values.type) for test in _ARROW_NUMERIC):
            raise DataError(
                f"column {name!r} is numeric in the drift profile but has type {values.type}"
            )
        filled = pc.fill_null(pc.cast(values, pa.float64()), float("nan"))
        return np.array(_arrow_floats(name, filled)[0], dtype=np.float64)
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"column {name!r} is numeric in the drift profile but holds non-numbers"
        ) from None


def _row_codes(
    name: str, values: Any, categories: Sequence[str]
) -> tuple[npt.NDArray[np.int64], int]:
    """Each row's category as an index into `categories` (-1 where null); categories the
    profile lacks get indices after them. Returns the codes and the number of indices."""
    index = {c: i for i, c in enumerate(categories)}

    def lookup(keys: Iterable[Any]) -> npt.NDArray[np.int64]:
        # One extra slot, -1, for rows whose key slot holds nothing (nulls).
        out = [
            -1 if (text := _category_text(k)) is None else index.setdefault(text, len(index))
            for k in keys
        ]
        return np.array([*out, -1], dtype=np.int64)

    if isinstance(values, pa.Array | pa.ChunkedArray):
        import pyarrow.compute as pc

        parts = []
        for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
            if not len(chunk):
                continue
            encoded = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
            table = lookup(encoded.dictionary.to_pylist())
            indices = encoded.indices
            raw = _row_floats(name, indices)
            raw[np.isnan(raw)] = len(table) - 1
            parts.append(table[raw.astype(np.int64)])
        codes = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return codes, len(index)
    array = np.asarray(values)
    if array.dtype.kind in "biufUS":
        keys, inverse = np.unique(array, return_inverse=True)
        return lookup(keys.tolist())[inverse.reshape(-1)], len(index)
    keys_of: dict[Any, int] = {}
    inverse_list = [keys_of.setdefault(v, len(keys_of)) for v in array.tolist()]
    table = lookup(list(keys_of))
    return table[np.array(inverse_list, dtype=np.int64)], len(index)
