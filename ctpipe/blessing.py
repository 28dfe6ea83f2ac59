"""The signed blessing: the proof that a model version passed ctpipe's gate.

Anyone who can reach MLflow can register a version, tag it and move an alias, so a tag
cannot vouch for a pickle (unpickling runs code). `register` signs a record binding the
model name, the version, the pickle's SHA-256 and the gate's evidence with an HMAC key that
only the pipeline steps and the predictor hold (the Secret `ctpipe-blessing` in a cluster);
every loader checks the signature before it downloads or unpickles anything.

Where the key comes from, first match wins:
    CTPIPE_BLESSING_KEY        the key itself (at least 32 characters)
    CTPIPE_BLESSING_KEY_FILE   a file holding it
    ~/.config/ctpipe/blessing.key   created on first use, outside a cluster only
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctpipe.errors import ConfigError, RegistryError

KEY_ENV = "CTPIPE_BLESSING_KEY"
KEY_FILE_ENV = "CTPIPE_BLESSING_KEY_FILE"
SECRET_NAME = "ctpipe-blessing"
TAG_RECORD = "ctpipe.blessing"
TAG_SIGNATURE = "ctpipe.blessing.hmac"
MIN_KEY_CHARS = 32
_IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class UnblessedModel(RegistryError):
    """A model version without a valid blessing: it is never loaded."""


@dataclass(frozen=True)
class Blessing:
    model: str
    version: str
    sha256: str  # of the pickle, as the registry stores it
    evidence: dict[str, Any] = field(default_factory=dict)  # the gate's figures
    signed_at: str = ""

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()

    def tags(self, key: bytes) -> dict[str, str]:
        """The model version tags that carry this blessing."""
        return {TAG_RECORD: self.canonical().decode(), TAG_SIGNATURE: self.signature(key)}


def sign(model: str, version: str, sha256: str, evidence: Mapping[str, Any]) -> dict[str, str]:
    """The version tags of a new blessing, signed with this process's key."""
    blessing = Blessing(
        model, str(version), sha256, dict(evidence), datetime.now(UTC).isoformat(timespec="seconds")
    )
    return blessing.tags(key())


def verify(tags: Mapping[str, str], model: str, version: str) -> Blessing:
    """The blessing of `model` v`version` from its tags, if its signature holds and it names
    this very version. Raises UnblessedModel with the reason otherwise."""
    label = f"{model} v{version}"
    record, signature = tags.get(TAG_RECORD), tags.get(TAG_SIGNATURE)
    if not record or not signature:
        raise UnblessedModel(
            f"{label} has no signed blessing ({TAG_RECORD} tag): it was not registered by a ctpipe "
            "run whose gate blessed it. Refusing to load it."
        )
    try:
        blessing = Blessing(**json.loads(record))
    except (TypeError, ValueError) as exc:
        raise UnblessedModel(
            f"{label}: its {TAG_RECORD} tag is not a blessing record ({exc})"
        ) from exc
    if not hmac.compare_digest(blessing.signature(key()), signature):
        raise UnblessedModel(
            f"{label}: the blessing's signature does not match (the record was altered, or it was "
            f"signed with another key than this one; see {KEY_ENV}). Refusing to load it."
        )
    if (blessing.model, blessing.version) != (model, str(version)):
        raise UnblessedModel(
            f"{label}: the blessing was signed for {blessing.model} v{blessing.version}, not for "
            "this version (copied from another one). Refusing to load it."
        )
    return blessing


def key() -> bytes:
    """This process's signing key (see the module's docstring)."""
    if value := os.environ.get(KEY_ENV):
        return _checked(value, KEY_ENV)
    if path := os.environ.get(KEY_FILE_ENV):
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{KEY_FILE_ENV}={path}: no such file holds the blessing key")
        return _checked(file.read_text().strip(), str(file))
    if os.environ.get(_IN_CLUSTER_ENV):
        # A key made up inside a pod would sign (or check) against nothing anyone else holds.
        raise ConfigError(
            f"{KEY_ENV} is not set: in a cluster the blessing key comes from the Secret "
            f"{SECRET_NAME} (see README, 'Cluster'); nothing is signed or loaded without it"
        )
    return _checked(_local_key(default_key_file()), str(default_key_file()))


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "ctpipe" / "blessing.key"


def environment() -> dict[str, str]:
    """The key as an environment variable, for a process that cannot read this machine's
    files (a pipeline step in a container)."""
    return {KEY_ENV: key().decode()}


def _local_key(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            # link() fails if the key exists: two first runs at once must agree on one key.
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    return path.read_text().strip()


def _checked(value: str, source: str) -> bytes:
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{source}: the blessing key has {len(value)} characters; use at least {MIN_KEY_CHARS} "
            "(for example `openssl rand -hex 32`)"
        )
    return value.encode()
