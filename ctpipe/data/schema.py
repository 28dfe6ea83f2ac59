"""The data schema: what each column is, and what its values looked like.

Inferred once from the first data a model name sees, then stored in versions under
`state_dir/schemas/<model_name>/`. Later runs are checked against the newest version.
When data differs from it only in distribution (wider ranges, new categories, a constant
column that came alive), `evolve` proposes the next version; it is stored when the run's
challenger is registered (or, under `validation.evolution: manual`, when a person accepts
it with `ctpipe schema accept`), so a champion and its schema move together.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ctpipe import storage
from ctpipe.config import Config
from ctpipe.data import tables
from ctpipe.errors import ValidationFailed

Kind = Literal["numeric", "categorical", "timestamp", "text"]
Role = Literal["feature", "target", "timestamp", "id", "dropped"]

CONSTANT_NOTE = "constant in the data the schema was inferred from: no range rule"
MAX_DOMAIN = 1000  # beyond this many values a string column gets no domain check
ID_LIKE_MIN_UNIQUE = 200  # a string column this varied, and mostly unique, is not a feature
_VERSION_FILE = re.compile(r"(?:^|/)v(\d{4,})\.json$")
PENDING_DIR = "pending"


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: Kind
    role: Role
    dtype: str
    null_rate: float
    minimum: float | None = None
    maximum: float | None = None
    domain: tuple[Any, ...] | None = None  # categories as text; labels keep their type
    sensitive: bool = False
    note: str | None = None  # why a column was dropped, for the report
    constant: float | None = None  # the one value of a numeric column that never varied


@dataclass(frozen=True)
class Schema:
    version: int
    task: str
    target: str
    timestamp: str
    columns: tuple[ColumnSchema, ...]
    rows: int
    created_at: str
    source_hash: str
    config_fingerprint: str
    notes: tuple[str, ...] = field(default=())
    parent_version: int | None = None  # the version this one evolved from
    changes: tuple[str, ...] = ()  # how it differs from its parent, one line per change
    proposed: bool = False  # evolved by a run and not stored yet

    @property
    def label(self) -> str:
        """'v3', or 'v4 (proposed, from v3)' for a version not stored yet."""
        if self.proposed:
            return f"v{self.version} (proposed, from v{self.parent_version})"
        return f"v{self.version}"

    def column(self, name: str) -> ColumnSchema | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def features(self) -> tuple[ColumnSchema, ...]:
        return tuple(c for c in self.columns if c.role == "feature")

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.features if c.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.features if c.kind == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    @property
    def label_domain(self) -> tuple[Any, ...] | None:
        target = self.column(self.target)
        return target.domain if target else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        raw = json.loads(text)
        columns = tuple(
            ColumnSchema(**{**c, "domain": tuple(c["domain"]) if c["domain"] is not None else None})
            for c in raw.pop("columns")
        )
        return cls(
            columns=columns,
            **{
                **raw,
                "notes": tuple(raw.get("notes", ())),
                "changes": tuple(raw.get("changes", ())),
            },
        )

    def markdown(self) -> str:
        lines = [
            f"**Schema {self.label}** ({self.rows:,} rows at inference, {self.created_at})",
            "",
        ]
        if self.changes:
            lines += [
                f"Changes from v{self.parent_version}:",
                "",
                *(f"- {change}" for change in self.changes),
                "",
            ]
        lines += [
            "| column | role | kind | null rate | range / domain |",
            "|---|---|---|---|---|",
        ]
        for c in self.columns:
            if c.minimum is not None:
                detail = f"[{c.minimum:.4g}, {c.maximum:.4g}]"
            elif c.domain is not None:
                shown = ", ".join(map(str, c.domain[:8]))
                detail = shown + (f", … ({len(c.domain)} values)" if len(c.domain) > 8 else "")
            else:
                detail = c.note or ""
            role = c.role + (" (sensitive)" if c.sensitive else "")
            lines.append(f"| {c.name} | {role} | {c.kind} | {c.null_rate:.3f} | {detail} |")
        return "\n".join(lines)


def config_fingerprint(config: Config) -> str:
    """What of the config shapes a schema; when it changes, a new version is inferred."""
    relevant = {
        "task": config.task,
        "target": config.target,
        "timestamp": config.timestamp,
        "id": config.id_column,
        "sensitive": sorted(config.sensitive_columns),
        # Constraints are rules checked against a schema, not part of its shape.
        "features": {k: v for k, v in asdict(config.features).items() if k != "constraints"},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def infer(table: pa.Table, config: Config, version: int = 1, source_hash: str = "") -> Schema:
    """Infer a schema from data. Raise ValidationFailed when the data cannot teach one."""
    if table.num_rows == 0:
        raise ValidationFailed("cannot infer a schema from empty data (0 rows)")
    if config.target not in table.column_names:
        raise ValidationFailed(
            f"column {config.target!r}, rule missing_label: the target column is not in the data"
        )
    if table.column(config.target).null_count == table.num_rows:
        raise ValidationFailed(f"column {config.target!r}, rule missing_label: every label is null")
    columns = [_infer_column(table, name, config) for name in tables.data_columns(table)]
    notes = tuple(f"{c.name}: {c.note}" for c in columns if c.note)
    if not any(c.role == "feature" for c in columns):
        raise ValidationFailed(
            "no usable feature columns: every column is the target, timestamp, id or dropped"
        )
    return Schema(
        version=version,
        task=config.task,
        target=config.target,
        timestamp=config.timestamp,
        columns=tuple(columns),
        rows=table.num_rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source_hash=source_hash,
        config_fingerprint=config_fingerprint(config),
        notes=notes,
    )


def _infer_column(table: pa.Table, name: str, config: Config) -> ColumnSchema:
    column = table.column(name)
    dtype = column.type
    rows = table.num_rows
    null_rate = _null_count(column) / rows
    base: dict[str, Any] = {"name": name, "dtype": str(dtype), "null_rate": round(null_rate, 6)}

    if name == config.target:
        if config.task == "classification":
            labels = pc.unique(label_values(column).drop_null()).to_pylist()
            return ColumnSchema(
                kind="categorical", role="target", domain=tuple(sorted(labels, key=str)), **base
            )
        return ColumnSchema(kind="numeric", role="target", **base, **_range(column))
    if name == config.timestamp:
        return ColumnSchema(kind="timestamp", role="timestamp", **base)
    if name == config.id_column:
        return ColumnSchema(kind="text", role="id", **base)
    sensitive = name in config.sensitive_columns
    if name in config.features.drop:
        return ColumnSchema(
            kind=_kind_of(dtype), role="dropped", note="dropped by features.drop", **base
        )
    if pa.types.is_null(dtype) or null_rate == 1.0:
        return ColumnSchema(
            kind="numeric", role="dropped", note="every value was null at inference", **base
        )
    if name in config.features.numeric or (
        tables.is_numeric(dtype) and name not in config.features.categorical
    ):
        try:
            span = _range(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # text forced numeric
            raise ValidationFailed(
                f"column {name!r}, rule type_change: features.numeric lists it, but {exc}"
            ) from exc
        if span["minimum"] == span["maximum"]:
            # A range [x, x] would call every later value out of range: a sensor that starts
            # reporting, an imputed column that fills in. Such a column gets no range rule.
            return ColumnSchema(
                kind="numeric",
                role="feature",
                sensitive=sensitive,
                constant=span["minimum"],
                note=CONSTANT_NOTE,
                **base,
            )
        return ColumnSchema(kind="numeric", role="feature", sensitive=sensitive, **base, **span)
    if pa.types.is_boolean(dtype) and name not in config.features.categorical:
        return ColumnSchema(
            kind="numeric", role="feature", sensitive=sensitive, minimum=0.0, maximum=1.0, **base
        )
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return ColumnSchema(
            kind="timestamp", role="dropped", note="timestamps are not used as features", **base
        )
    values = _as_text(column).drop_null()
    unique = pc.unique(values)
    forced = name in config.features.categorical or sensitive
    if not forced and len(unique) >= ID_LIKE_MIN_UNIQUE and len(unique) > 0.5 * len(values):
        note = f"{len(unique):,} distinct values: looks like an identifier or free text"
        return ColumnSchema(kind="text", role="dropped", note=note, **base)
    domain = tuple(sorted(unique.to_pylist())) if len(unique) <= MAX_DOMAIN else None
    return ColumnSchema(
        kind="categorical", role="feature", sensitive=sensitive, domain=domain, **base
    )


def label_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Class labels as written: 1.0 read back from a float column is the label 1."""
    if pa.types.is_floating(column.type):
        present = pc.drop_null(column)
        if len(present) and pc.all(pc.equal(present, pc.floor(present))).as_py():
            return column.cast(pa.int64())
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _kind_of(dtype: pa.DataType) -> Kind:
    if tables.is_numeric(dtype) or pa.types.is_boolean(dtype):
        return "numeric"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    return "categorical"


def _null_count(column: pa.ChunkedArray) -> int:
    count = column.null_count
    if pa.types.is_floating(column.type):
        count += pc.sum(pc.is_nan(column).cast(pa.int64())).as_py() or 0
    return int(count)


def _range(column: pa.ChunkedArray) -> dict[str, Any]:
    numbers = column.cast(pa.float64()) if not pa.types.is_floating(column.type) else column
    stats = pc.min_max(pc.drop_null(numbers))  # NaN is skipped by min_max
    low, high = stats["min"].as_py(), stats["max"].as_py()
    return {"minimum": low, "maximum": high}


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


# -------------------------------------------------------------------------- evolution


def evolve(schema: Schema, table: pa.Table) -> Schema | None:
    """The next version when `table` differs from `schema` only in distribution, else None.

    Ranges widen to cover the new values, category sets grow (up to MAX_DOMAIN), and a
    constant column whose values now vary gets its first range. Nothing else moves: null
    rates, kinds, roles and labels are integrity, and a change there is an error for
    validation to report, not something to absorb. The result is `proposed` (not stored).
    """
    columns = []
    changes: list[str] = []
    for spec in schema.columns:
        if spec.role != "feature" or spec.name not in table.column_names:
            columns.append(spec)
            continue
        column = table.column(spec.name)
        if spec.kind == "numeric":
            evolved, change = _evolve_numeric(spec, column)
        elif spec.kind == "categorical" and spec.domain is not None:
            evolved, change = _evolve_categories(spec, column)
        else:
            evolved, change = spec, None
        columns.append(evolved)
        if change:
            changes.append(f"{spec.name}: {change}")
    if not changes:
        return None
    from dataclasses import replace

    return replace(
        schema,
        version=schema.version + 1,
        columns=tuple(columns),
        rows=table.num_rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=tuple(f"{c.name}: {c.note}" for c in columns if c.note),
        parent_version=schema.version,
        changes=tuple(changes),
        proposed=True,
    )


def _numbers(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Finite present values as float64; None when the column is not numeric (integrity)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        numbers = column.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    numbers = pc.drop_null(numbers)
    return numbers.filter(pc.is_finite(numbers))


def _evolve_numeric(spec: ColumnSchema, column: pa.ChunkedArray) -> tuple[ColumnSchema, str | None]:
    from dataclasses import replace

    numbers = _numbers(column)
    if numbers is None or len(numbers) == 0:
        return spec, None
    stats = pc.min_max(numbers)
    low, high = float(stats["min"].as_py()), float(stats["max"].as_py())
    if spec.minimum is None or spec.maximum is None:
        if spec.constant is None or (low == high == spec.constant):
            return spec, None
        low, high = min(low, spec.constant), max(high, spec.constant)
        evolved = replace(spec, minimum=low, maximum=high, constant=None, note=None)
        return evolved, (
            f"came alive: constant {spec.constant:.6g} at inference, now in [{low:.6g}, {high:.6g}]"
        )
    if low >= spec.minimum and high <= spec.maximum:
        return spec, None
    low, high = min(low, spec.minimum), max(high, spec.maximum)
    evolved = replace(spec, minimum=low, maximum=high)
    return evolved, (
        f"range widened from [{spec.minimum:.6g}, {spec.maximum:.6g}] to [{low:.6g}, {high:.6g}]"
    )


def _evolve_categories(
    spec: ColumnSchema, column: pa.ChunkedArray
) -> tuple[ColumnSchema, str | None]:
    from dataclasses import replace

    seen = set(pc.unique(_as_text(column).drop_null()).to_pylist())
    new = sorted(seen - {str(v) for v in spec.domain or ()})
    if not new:
        return spec, None
    merged = tuple(sorted({*map(str, spec.domain or ()), *new}))
    shown = ", ".join(repr(v) for v in new[:8]) + (
        f", … ({len(new)} in all)" if len(new) > 8 else ""
    )
    if len(merged) > MAX_DOMAIN:
        return replace(spec, domain=None), (
            f"{len(new):,} new categories ({shown}); over {MAX_DOMAIN:,} in all, so no category rule"
        )
    noun = "category" if len(new) == 1 else "categories"
    return replace(spec, domain=merged), f"new {noun} {shown}"


# ------------------------------------------------------------------------------ store


@dataclass(frozen=True)
class PendingChange:
    """A schema change a run proposed under `validation.evolution: manual`."""

    run_id: str
    proposed: Schema
    at: str  # ISO 8601
    data: str  # where the run's data came from

    def describe(self) -> str:
        changes = "; ".join(self.proposed.changes)
        return f"run {self.run_id}: schema v{self.proposed.parent_version} -> {changes}"

    @property
    def accept_command(self) -> str:
        return f"ctpipe schema accept --run {self.run_id}"


class SchemaStore:
    """Versioned schemas under `<state_dir>/schemas/<model_name>/v0001.json`, and
    changes waiting for approval under `.../pending/<run id>.json`."""

    def __init__(self, state_dir: str, model_name: str) -> None:
        self.root = storage.join(state_dir, "schemas", model_name)

    def uri(self, version: int) -> str:
        return storage.join(self.root, f"v{version:04d}.json")

    def pending_uri(self, run_id: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) or "run"
        return storage.join(self.root, PENDING_DIR, f"{safe}.json")

    def propose(self, proposed: Schema, run_id: str, data: str) -> PendingChange:
        """Record a change that needs a person's approval; returns the record."""
        change = PendingChange(
            run_id, proposed, datetime.now(UTC).isoformat(timespec="seconds"), data
        )
        body = {
            "run_id": run_id,
            "at": change.at,
            "data": data,
            "proposed": json.loads(proposed.to_json()),
        }
        storage.write_bytes(self.pending_uri(run_id), json.dumps(body, indent=2).encode())
        return change

    def pending(self) -> list[PendingChange]:
        """Changes waiting for `ctpipe schema accept`, oldest first."""
        found = []
        for uri in storage.list_files(storage.join(self.root, PENDING_DIR), (".json",)):
            raw = json.loads(storage.read_bytes(uri).decode())
            proposed = Schema.from_json(json.dumps(raw["proposed"]))
            found.append(PendingChange(raw["run_id"], proposed, raw["at"], raw.get("data", "")))
        return sorted(found, key=lambda c: c.at)

    def accept(self, run_id: str | None = None) -> tuple[Schema, list[PendingChange]]:
        """Store a pending change as the next version and clear every pending change.

        Without `run_id` there must be exactly one pending change. The others are cleared
        too: they describe older data, and the next run proposes again if it still differs.
        Returns the stored schema and the changes cleared.
        """
        from ctpipe.errors import DataError

        waiting = self.pending()
        if not waiting:
            raise DataError(f"no schema change is waiting for approval under {self.root}")
        if run_id is None:
            if len(waiting) > 1:
                runs = ", ".join(c.run_id for c in waiting)
                raise DataError(
                    f"{len(waiting)} schema changes are waiting ({runs}); name one with --run"
                )
            chosen = waiting[0]
        else:
            chosen = next((c for c in waiting if c.run_id == run_id), None)  # type: ignore[assignment]
            if chosen is None:
                runs = ", ".join(c.run_id for c in waiting)
                raise DataError(f"no schema change from run {run_id!r} is waiting; waiting: {runs}")
        latest = self.versions()
        if latest and latest[-1] != chosen.proposed.parent_version:
            raise DataError(
                f"run {chosen.run_id}'s change was proposed against schema "
                f"v{chosen.proposed.parent_version}, but v{latest[-1]} is stored now; rerun the "
                "pipeline so that it proposes a change against the newest version"
            )
        stored = self.save_next(chosen.proposed)
        for change in waiting:
            storage.delete(self.pending_uri(change.run_id))
        return stored, waiting

    def versions(self) -> list[int]:
        found = []
        for uri in storage.list_files(self.root):
            match = _VERSION_FILE.search(uri)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def latest(self) -> Schema | None:
        versions = self.versions()
        return self.load(versions[-1]) if versions else None

    def load(self, version: int) -> Schema:
        return Schema.from_json(storage.read_bytes(self.uri(version)).decode())

    def save_next(self, schema: Schema) -> Schema:
        """Store as the next free version and return it with that number.

        Two runs racing to write the same version cannot both win: the write is
        exclusive, and the loser takes the number after.
        """
        from dataclasses import replace

        versions = self.versions()
        version = (versions[-1] if versions else 0) + 1
        while True:
            numbered = replace(schema, version=version, proposed=False)
            if storage.write_bytes(self.uri(version), numbered.to_json().encode(), exclusive=True):
                return numbered
            version += 1
