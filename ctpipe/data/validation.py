"""Check new data against a stored schema.

Every violation names its rule, its kind, column, files, a count, example values and the
rows where they sit. Warnings let the run go on; errors stop it before anything is trained.

Two kinds of rule. *Integrity*: the data is broken (a column missing, text in a numeric
column, labels outside the task's domain, a null explosion, values a declared constraint
forbids, duplicated ids, numbers that are infinite or become infinite inside a model).
*Distribution*: the world moved (values beyond the inferred
range, categories not seen before). `validation.integrity` and `validation.distribution`
say which kind may stop a run; by default only integrity does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctpipe.config import Constraint, Validation
from ctpipe.data import tables
from ctpipe.data.schema import ColumnSchema, PendingChange, Schema, label_values
from ctpipe.data.tables import FILE_COLUMN, ROW_COLUMN
from ctpipe.errors import ValidationFailed

Severity = Literal["error", "warning"]
RuleKind = Literal["integrity", "distribution"]
DISTRIBUTION_RULES = frozenset({"out_of_range", "unseen_category", "extra_column", "schema_change"})
MAX_EXAMPLES = 5
# scikit-learn's trees cast features to float32: anything larger becomes inf there and
# fails deep inside fit or predict with a message that names no column.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER = r"^\s*[-+]?((\d+(\.\d*)?)|(\.\d+))([eE][-+]?\d+)?\s*$|^\s*[-+]?(nan|NaN|inf|Inf|infinity|Infinity)\s*$"


@dataclass(frozen=True)
class Location:
    file: str
    row: int  # data row in that file, counting from 1 (a CSV header is not a row)
    value: Any


@dataclass(frozen=True)
class Violation:
    rule: str
    severity: Severity
    column: str | None
    count: int
    detail: str
    files: dict[str, int] = field(default_factory=dict)  # rows affected, per file
    examples: tuple[Location, ...] = ()

    @property
    def kind(self) -> RuleKind:
        return "distribution" if self.rule in DISTRIBUTION_RULES else "integrity"

    def lines(self) -> list[str]:
        """One line per affected file, for terminal output."""
        column = f"column {self.column!r}, " if self.column else ""
        rule = f"rule {self.rule} ({self.kind})"
        shown = ", ".join(f"{e.value!r} (row {e.row})" for e in self.examples[:3])
        tail = f"; e.g. {shown}" if shown else ""
        if not self.files:
            return [f"{column}{rule}: {self.detail}{tail}"]
        out = []
        for file, count in self.files.items():
            mine = [e for e in self.examples if e.file == file][:3]
            here = ", ".join(f"{e.value!r} (row {e.row})" for e in mine)
            out.append(
                f"{file}: {column}{rule}: {self.detail} [{count:,} row(s)]"
                + (f"; e.g. {here}" if here else "")
            )
        return out


@dataclass(frozen=True)
class ValidationResult:
    rows: int
    schema_version: int
    schema_created: bool
    violations: tuple[Violation, ...]
    evolved: tuple[str, ...] = ()  # the next schema version's changes, when one was proposed
    evolved_version: int | None = None

    @property
    def errors(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "error"]

    @property
    def warnings(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "warning"]

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def summary(self) -> str:
        state = "passed" if self.passed else "FAILED"
        created = " (inferred now)" if self.schema_created else ""
        evolved = (
            f"; schema v{self.evolved_version} proposed ({len(self.evolved)} change(s))"
            if self.evolved
            else ""
        )
        return (
            f"validation {state} against schema v{self.schema_version}{created}: "
            f"{self.rows:,} rows, {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
            f"{evolved}"
        )

    def markdown(self) -> str:
        lines = [
            f"## Data validation: {'passed' if self.passed else 'FAILED'}",
            "",
            self.summary,
            "",
        ]
        if self.evolved:
            lines += [
                f"The data differs from schema v{self.schema_version} in distribution only; "
                f"schema v{self.evolved_version} is proposed with these changes:",
                "",
                *(f"- {change}" for change in self.evolved),
                "",
            ]
        if not self.violations:
            lines.append("No anomalies found.")
            return "\n".join(lines)
        lines += [
            "| severity | kind | rule | file | column | rows | examples (row: value) | detail |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in sorted(
            self.violations, key=lambda v: (v.severity != "error", v.rule, v.column or "")
        ):
            for file, count in (v.files or {"": v.count}).items():
                examples = ", ".join(
                    f"{e.row}: `{e.value!r}`" for e in v.examples if e.file == file or not file
                )
                lines.append(
                    f"| {v.severity} | {v.kind} | {v.rule} | {file} | {v.column or ''} | {count:,} "
                    f"| {examples} | {v.detail} |"
                )
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.passed:
            return
        body = "\n".join(f"  - {line}" for v in self.errors for line in v.lines())
        raise ValidationFailed(
            f"data validation failed against schema v{self.schema_version}:\n{body}"
        )


def check(
    table: pa.Table,
    schema: Schema,
    tolerances: Validation,
    *,
    constraints: dict[str, Constraint] | None = None,
    schema_created: bool = False,
) -> ValidationResult:
    """Every rule, on every column of the schema, plus columns the schema does not know.

    `constraints` are the user's declared limits (`features.constraints`).
    """
    found: list[Violation] = []
    if table.num_rows == 0:
        found.append(Violation("empty_data", "error", None, 0, "the data has no rows"))
        return ValidationResult(0, schema.version, schema_created, tuple(found))
    checker = _Checker(table, tolerances)
    for column in schema.columns:
        if column.role in ("feature", "target", "timestamp"):
            found.extend(checker.column(column, schema))
        elif column.role == "id":
            found.extend(checker.duplicate_ids(column))
    for name, constraint in (constraints or {}).items():
        found.extend(checker.constraint(name, constraint))
    known = {c.name for c in schema.columns}
    for name in tables.data_columns(table):
        if name not in known:
            found.append(
                Violation(
                    "extra_column", "warning", name, table.num_rows, "not in the schema; ignored"
                )
            )
    graded = tuple(_apply_strictness(v, tolerances) for v in found)
    return ValidationResult(table.num_rows, schema.version, schema_created, graded)


def schema_change(pending: PendingChange, rows: int) -> Violation:
    """The error that stops a run under `validation.evolution: manual`."""
    proposed = pending.proposed
    detail = (
        f"the data differs from schema v{proposed.parent_version} in distribution "
        f"({'; '.join(proposed.changes)}). validation.evolution is manual, so this needs "
        f"approval: run `{pending.accept_command}` and rerun, or set validation.evolution: auto"
    )
    return Violation("schema_change", "error", None, rows, detail)


def _apply_strictness(violation: Violation, tolerances: Validation) -> Violation:
    """A soft kind of rule never stops a run: its errors are reported as warnings."""
    strictness = getattr(tolerances, violation.kind)
    if violation.severity != "error" or strictness == "hard":
        return violation
    from dataclasses import replace

    detail = f"{violation.detail}; a warning only: validation.{violation.kind} is soft"
    return replace(violation, severity="warning", detail=detail)


class _Checker:
    def __init__(self, table: pa.Table, tolerances: Validation) -> None:
        self.table = table
        self.rows = table.num_rows
        self.tol = tolerances
        self.infos = tables.file_infos(table)
        self._files = (
            table.column(FILE_COLUMN).cast(pa.string())
            if FILE_COLUMN in table.column_names
            else None
        )
        self._row_numbers = table.column(ROW_COLUMN) if ROW_COLUMN in table.column_names else None

    # -------------------------------------------------------------- locating rows

    def locate(
        self, mask: np.ndarray, values: pa.ChunkedArray | None
    ) -> tuple[dict[str, int], tuple[Location, ...]]:
        """Per-file counts and a few example rows where `mask` is true."""
        index = np.flatnonzero(mask)
        if self._files is None or self._row_numbers is None or len(index) == 0:
            return {}, ()
        picked = pa.array(index)
        files = self._files.take(picked).to_pylist()
        counts = dict(Counter(files))
        # The first few rows of every affected file, not only of the first files listed.
        chosen: list[int] = []
        per_file: Counter[str] = Counter()
        for i, file in enumerate(files):
            if per_file[file] < MAX_EXAMPLES:
                chosen.append(i)
                per_file[file] += 1
        sample = pa.array(index[chosen])
        rows = self._row_numbers.take(sample).to_pylist()
        shown = values.take(sample).to_pylist() if values is not None else [None] * len(rows)
        examples = tuple(
            Location(files[i], row, tables.to_python(value))
            for i, row, value in zip(chosen, rows, shown, strict=True)
        )
        return counts, examples

    def violation(
        self,
        rule: str,
        severity: Severity,
        column: str,
        mask: np.ndarray,
        values: pa.ChunkedArray | None,
        detail: str,
    ) -> Violation:
        files, examples = self.locate(mask, values)
        return Violation(rule, severity, column, int(mask.sum()), detail, files, examples)

    def grade(self, share: float, warn: float, maximum: float) -> Severity | None:
        if share > maximum:
            return "error"
        if share > warn:
            return "warning"
        return None

    # -------------------------------------------------------------------- rules

    def column(self, spec: ColumnSchema, schema: Schema) -> list[Violation]:
        name = spec.name
        if name not in self.table.column_names:
            rule = "missing_label" if spec.role == "target" else "missing_column"
            files = {f.uri: f.rows for f in self.infos}
            return [
                Violation(
                    rule, "error", name, self.rows, f"the {spec.role} column is missing", files
                )
            ]
        out = self._missing_in_files(spec)
        values = self.table.column(name)
        nulls = _null_mask(values)
        if spec.role == "target":
            return out + self._labels(spec, schema, values, nulls)
        if spec.role == "timestamp":
            if nulls.any():
                out.append(
                    self.violation(
                        "null_timestamp", "error", name, nulls, None, "rows without a timestamp"
                    )
                )
            return out
        out += self._nulls(spec, nulls)
        if nulls.all():
            return out
        if spec.kind == "numeric":
            numbers, bad = self._as_numbers(values, nulls)
            if bad.any():
                detail = f"expected numbers (schema type {spec.dtype}), found text"
                out.append(self.violation("type_change", "error", name, bad, values, detail))
                return out
            unusable = self._non_finite(name, numbers, values)
            if unusable:
                return out + unusable  # a range with inf in it says nothing
            out += self._range(spec, numbers, nulls)
        elif spec.kind == "categorical" and spec.domain is not None:
            out += self._categories(spec, values, nulls)
        return out

    def duplicate_ids(self, spec: ColumnSchema) -> list[Violation]:
        """Primary ids must be unique: labels and predictions are joined by them."""
        if spec.name not in self.table.column_names:
            return []
        values = _text(self.table.column(spec.name))
        counts = pc.value_counts(values.drop_null())
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated) == 0:
            return []
        member = pc.fill_null(pc.is_in(values, value_set=repeated), False)
        mask = np.asarray(member.to_numpy(zero_copy_only=False), bool)
        detail = f"{len(repeated):,} id(s) appear more than once; ids must be unique"
        return [self.violation("duplicate_id", "error", spec.name, mask, values, detail)]

    def constraint(self, name: str, limits: Constraint) -> list[Violation]:
        """Values the user declared impossible (`features.constraints`)."""
        if name not in self.table.column_names:
            return [
                Violation(
                    "constraint",
                    "error",
                    name,
                    self.rows,
                    "features.constraints names a column that is not in the data",
                )
            ]
        values = self.table.column(name)
        nulls = _null_mask(values)
        numbers, bad = self._as_numbers(values, nulls)
        if bad.any():
            detail = "features.constraints applies to numbers, found text"
            return [self.violation("type_change", "error", name, bad, values, detail)]
        low = -np.inf if limits.min is None else limits.min
        high = np.inf if limits.max is None else limits.max
        with np.errstate(invalid="ignore"):
            outside = ~nulls & ((numbers < low) | (numbers > high))
        if not outside.any():
            return []
        bounds = " and ".join(
            text
            for text in (
                f">= {limits.min:g}" if limits.min is not None else "",
                f"<= {limits.max:g}" if limits.max is not None else "",
            )
            if text
        )
        detail = f"values must be {bounds} (features.constraints.{name})"
        return [self.violation("constraint", "error", name, outside, values, detail)]

    def _missing_in_files(self, spec: ColumnSchema) -> list[Violation]:
        absent = {f.uri: f.rows for f in self.infos if spec.name not in f.columns}
        if not absent or (
            len(absent) == len(self.infos) and spec.name not in self.table.column_names
        ):
            return []
        rule = "missing_label" if spec.role == "target" else "missing_column"
        return [
            Violation(
                rule,
                "error",
                spec.name,
                sum(absent.values()),
                f"the {spec.role} column is missing",
                absent,
            )
        ]

    def _non_finite(
        self, name: str, numbers: np.ndarray, values: pa.ChunkedArray
    ) -> list[Violation]:
        """Infinite numbers, and finite ones that turn infinite in a model: cast to float32
        (scikit-learn's trees) or squared (scaling, variances)."""
        infinite = np.isinf(numbers)
        with np.errstate(over="ignore", invalid="ignore"):
            grows = np.isinf(numbers.astype(np.float32)) | np.isinf(numbers * numbers)
        overflow = grows & ~infinite
        found = []
        if infinite.any():
            detail = "infinite values: a model cannot learn from or score them"
            found.append(self.violation("non_finite", "error", name, infinite, values, detail))
        if overflow.any():
            detail = (
                f"values beyond ±{FLOAT32_MAX:.4g} become infinite when a model casts them to "
                "float32 or squares them"
            )
            found.append(self.violation("overflow", "error", name, overflow, values, detail))
        return found

    def _nulls(self, spec: ColumnSchema, nulls: np.ndarray) -> list[Violation]:
        rate = float(nulls.mean())
        if rate == 1.0 and spec.null_rate < 1.0:
            return [
                self.violation("all_null", "error", spec.name, nulls, None, "every value is null")
            ]
        increase = rate - spec.null_rate
        severity = self.grade(
            increase, self.tol.warn_null_rate_increase, self.tol.max_null_rate_increase
        )
        if severity is None:
            return []
        detail = f"null rate {rate:.1%}, schema {spec.null_rate:.1%} (max increase {self.tol.max_null_rate_increase:.0%})"
        return [self.violation("null_rate_increase", severity, spec.name, nulls, None, detail)]

    def _as_numbers(
        self, values: pa.ChunkedArray, nulls: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        dtype = values.type
        if tables.is_numeric(dtype) or pa.types.is_boolean(dtype) or pa.types.is_null(dtype):
            return _float_array(values), np.zeros(self.rows, bool)
        text = values.cast(values.type.value_type) if pa.types.is_dictionary(dtype) else values
        if not pa.types.is_string(text.type):
            return np.full(self.rows, np.nan), ~nulls
        ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER), True)
        bad = ~np.asarray(ok.to_numpy(zero_copy_only=False), bool)
        if bad.any():
            return np.full(self.rows, np.nan), bad
        return _float_array(pc.utf8_trim_whitespace(text).cast(pa.float64())), bad

    def _range(self, spec: ColumnSchema, numbers: np.ndarray, nulls: np.ndarray) -> list[Violation]:
        if spec.minimum is None or spec.maximum is None:
            return []
        with np.errstate(invalid="ignore"):
            outside = ~nulls & ((numbers < spec.minimum) | (numbers > spec.maximum))
        present = int((~nulls).sum())
        share = float(outside.sum()) / present if present else 0.0
        # Any handful of values beyond the training extremes is normal; a share is news.
        severity = self.grade(
            share, min(0.01, self.tol.max_out_of_range_fraction), self.tol.max_out_of_range_fraction
        )
        if severity is None:
            return []
        detail = (
            f"{share:.1%} of values outside the schema range [{spec.minimum:.4g}, {spec.maximum:.4g}] "
            f"(max {self.tol.max_out_of_range_fraction:.0%})"
        )
        return [
            self.violation(
                "out_of_range", severity, spec.name, outside, self.table.column(spec.name), detail
            )
        ]

    def _categories(
        self, spec: ColumnSchema, values: pa.ChunkedArray, nulls: np.ndarray
    ) -> list[Violation]:
        text = _text(values)
        known = pa.array([str(v) for v in spec.domain or ()], pa.string())
        member = pc.fill_null(pc.is_in(text, value_set=known), True)
        unseen = ~np.asarray(member.to_numpy(zero_copy_only=False), bool) & ~nulls
        present = int((~nulls).sum())
        share = float(unseen.sum()) / present if present else 0.0
        severity = self.grade(share, 0.0, self.tol.max_unseen_category_fraction)
        if severity is None:
            return []
        distinct = len(set(pa.chunked_array(text).filter(pa.array(unseen)).to_pylist()))
        detail = (
            f"{share:.1%} of rows hold {distinct:,} categor{'y' if distinct == 1 else 'ies'} "
            f"not in the schema (max {self.tol.max_unseen_category_fraction:.0%})"
        )
        return [self.violation("unseen_category", severity, spec.name, unseen, text, detail)]

    def _labels(
        self, spec: ColumnSchema, schema: Schema, values: pa.ChunkedArray, nulls: np.ndarray
    ) -> list[Violation]:
        out: list[Violation] = []
        share = float(nulls.mean())
        if share == 1.0:
            return [
                self.violation(
                    "missing_label", "error", spec.name, nulls, None, "every label is null"
                )
            ]
        severity = self.grade(share, 0.0, self.tol.max_missing_label_fraction)
        if severity is not None:
            detail = (
                f"{share:.1%} of rows have no label (max {self.tol.max_missing_label_fraction:.0%}); "
                "they are left out of training"
            )
            out.append(self.violation("missing_label", severity, spec.name, nulls, None, detail))
        if schema.task == "classification":
            present = pc.unique(_text(label_values(values)).filter(pa.array(~nulls)))
            if len(present) < 2:
                detail = (
                    f"every label is {present[0].as_py()!r}: a classifier needs two classes or more"
                    if len(present)
                    else "no labels"
                )
                out.append(
                    Violation(
                        "single_class", "error", spec.name, self.rows - int(nulls.sum()), detail
                    )
                )
        if schema.task == "classification" and spec.domain is not None:
            text = _text(label_values(values))
            # Arrow's own text for the domain, as for the data: True is 'true', not 'True'.
            known = pa.array(list(spec.domain)).cast(pa.string())
            member = pc.fill_null(pc.is_in(text, value_set=known), True)
            unseen = ~np.asarray(member.to_numpy(zero_copy_only=False), bool) & ~nulls
            if unseen.any():
                detail = f"labels outside the schema's label domain {list(spec.domain)}"
                out.append(self.violation("unseen_label", "error", spec.name, unseen, text, detail))
        elif schema.task == "regression":
            numbers, bad = self._as_numbers(values, nulls)
            if bad.any():
                out.append(
                    self.violation(
                        "type_change", "error", spec.name, bad, values, "expected numeric labels"
                    )
                )
            else:
                out += self._non_finite(spec.name, numbers, values)
        return out


def _null_mask(values: pa.ChunkedArray) -> np.ndarray:
    mask = (
        pc.is_null(values, nan_is_null=True)
        if pa.types.is_floating(values.type)
        else pc.is_null(values)
    )
    return np.asarray(mask.to_numpy(zero_copy_only=False), bool)


def _float_array(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(
        pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), float
    )


def _text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values if pa.types.is_string(values.type) else values.cast(pa.string())
