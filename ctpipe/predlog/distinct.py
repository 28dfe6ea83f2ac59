"""Request ids at scale: are they all distinct, and which pairs are equal? Exact, or as
good as (see `equal_pairs`), and quick for the usual ids of one length.

A day of traffic is millions of ids, and Arrow's hash kernels (count_distinct, group_by)
take a few hundred nanoseconds an id there, memory-bound on a hash table larger than the
cache. Ids of one length (UUIDs, the predictor's own ids) are hashed here with numpy, 8
bytes at a time, and the hashes sorted: equal neighbours are the only candidates for a repeat. None
means every id is distinct (certain); a candidate - a repeat, or once in about 2**64/n**2
two ids that share a hash - is settled by Arrow's exact count. Ids of varying length go
to Arrow's count directly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEED = np.uint64(0xCBF29CE484222325)


def all_distinct(ids: pa.ChunkedArray | pa.Array) -> bool:
    """True when no id repeats and none is null."""
    if ids.null_count:
        return False
    if len(ids) < 2:
        return True
    hashes = fixed_width_hashes(ids)
    if hashes is not None:
        hashes.sort()
        if not bool((hashes[1:] == hashes[:-1]).any()):
            return True
    return bool(pc.count_distinct(ids).as_py() == len(ids))


def fixed_width_hashes(ids: pa.ChunkedArray | pa.Array, seed: int = 0) -> np.ndarray | None:
    """A 64-bit hash of each id (another seed: an independent hash); None unless every
    chunk's ids share one byte length."""
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        hashed = _hash_chunk(chunk, _SEED ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
        if hashed is None:
            return None
        parts.append(hashed)
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)


def _hash_chunk(chunk: pa.Array, seed: np.uint64) -> np.ndarray | None:
    if pa.types.is_string(chunk.type) or pa.types.is_binary(chunk.type):
        offset_type: type[np.signedinteger] = np.int32
    elif pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type):
        offset_type = np.int64
    else:
        return None
    rows = len(chunk)
    offsets = np.frombuffer(chunk.buffers()[1], offset_type)[chunk.offset : chunk.offset + rows + 1]
    width = int(offsets[1] - offsets[0])
    if bool((np.diff(offsets) != width).any()):
        return None
    hashes = np.full(rows, seed, np.uint64)
    if width:
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        matrix = data.reshape(rows, width)
        whole = width // 8 * 8
        if whole:
            words = np.ascontiguousarray(matrix[:, :whole]).view(np.uint64)
            for column in words.T:
                hashes = _mix(hashes ^ column)
        for column in matrix[:, whole:].T:  # the last width % 8 bytes, one at a time
            hashes = _mix(hashes ^ column.astype(np.uint64))
    return _mix(hashes ^ np.uint64(width))


def _mix(hashes: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, a bijection in which every input bit moves every output
    bit: applied after each word, so that ids differing anywhere differ everywhere."""
    with np.errstate(over="ignore"):
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xFF51AFD7ED558CCD)
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xC4CEB9FE1A85EC53)
        hashes ^= hashes >> np.uint64(33)
    return hashes


def equal_pairs(
    left: pa.ChunkedArray | pa.Array, right: pa.ChunkedArray | pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i, j) with left[i] == right[j]: one hash join (Acero's, multi-threaded)
    that outputs the two row numbers only.

    Ids of one length are joined on a 64-bit hash, a join on integers that is 2-3 times
    quicker than on text; a pair whose ids merely share that hash is then dropped by a
    second, independent 64-bit hash, so a wrong pair needs both to collide (about one
    chance in 2**128 per pair). Ids of varying length are joined as text, exactly."""
    if not len(left) or not len(right):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    left_hash, right_hash = fixed_width_hashes(left), fixed_width_hashes(right)
    if left_hash is None or right_hash is None or left.null_count or right.null_count:
        return _join(left, right)
    rows, right_rows = _join(pa.array(left_hash), pa.array(right_hash))
    left_check, right_check = fixed_width_hashes(left, 1), fixed_width_hashes(right, 1)
    assert left_check is not None and right_check is not None
    same = left_check[rows] == right_check[right_rows]
    return rows[same], right_rows[same]


def _join(
    left: pa.ChunkedArray | pa.Array, right: pa.ChunkedArray | pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.acero as acero

    sides = [
        pa.table({"key": keys, "row": np.arange(len(keys), dtype=np.int64)})
        for keys in (left, right)
    ]
    join = acero.HashJoinNodeOptions(
        "inner", left_keys=["key"], right_keys=["key"], left_output=["row"], right_output=["row"]
    )
    sources = [
        acero.Declaration("table_source", acero.TableSourceNodeOptions(side)) for side in sides
    ]
    pairs = acero.Declaration("hashjoin", join, inputs=sources).to_table(use_threads=True)
    return (
        pairs.column(0).to_numpy().astype(np.int64, copy=False),
        pairs.column(1).to_numpy().astype(np.int64, copy=False),
    )
