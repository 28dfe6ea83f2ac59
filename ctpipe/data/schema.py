"""The data schema: what each column is, and what its values looked like.

Inferred once from the first data a model name sees, then stored in versions under
`state_dir/schemas/<model_name>/`. Later runs are checked against the newest version.
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

MAX_DOMAIN = 1000  # beyond this many values a string column gets no domain check
ID_LIKE_MIN_UNIQUE = 200  # a string column this varied, and mostly unique, is not a feature
_VERSION_FILE = re.compile(r"v(\d{4,})\.json$")


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
        return cls(columns=columns, **{**raw, "notes": tuple(raw.get("notes", ()))})

    def markdown(self) -> str:
        lines = [
            f"**Schema v{self.version}** ({self.rows:,} rows at inference, {self.created_at})",
            "",
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


# ------------------------------------------------------------------------------ store


class SchemaStore:
    """Versioned schemas under `<state_dir>/schemas/<model_name>/v0001.json`."""

    def __init__(self, state_dir: str, model_name: str) -> None:
        self.root = storage.join(state_dir, "schemas", model_name)

    def uri(self, version: int) -> str:
        return storage.join(self.root, f"v{version:04d}.json")

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
            numbered = replace(schema, version=version)
            if storage.write_bytes(self.uri(version), numbered.to_json().encode(), exclusive=True):
                return numbered
            version += 1
