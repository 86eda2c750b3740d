"""The train/holdout split of a tape, decided once by a stable hash of each loan's (or its borrower's) id.

Models fit on train only; the holdout serves the privacy audit (members vs
non-members) and train-synthetic-test-real. The hash is a fixed published
algorithm computed here, so a loan never changes side between runs, machines
or library versions.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from models.errors import InvalidDataError

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _stable_unit_hash(ids: pl.Series, salt: str) -> np.ndarray:
    """A number in [0, 1) per id, identical in every process, machine and library version.

    FNV-1a (64-bit) over the UTF-8 bytes of `salt`, a NUL and the id, then
    MurmurHash3's 64-bit finaliser to spread FNV's weak low bits. Both are fixed
    published algorithms computed here with NumPy on the Arrow string buffers,
    so unlike polars' `hash` (which may change between versions) a loan never
    moves between train and holdout after an upgrade.
    """
    array = ids.cast(pl.String).to_arrow()
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    seed = _FNV_OFFSET
    with np.errstate(over="ignore"):
        for byte in salt.encode("utf-8") + b"\x00":
            seed = (seed ^ np.uint64(byte)) * _FNV_PRIME
        hashes = np.full(len(array), seed, dtype=np.uint64)
        # Visit ids longest first so step j touches only the ids longer than j:
        # total work is the total number of bytes, whatever the longest id.
        order = np.argsort(-lengths, kind="stable")
        sorted_starts, sorted_lengths = starts[order], lengths[order]
        sorted_hashes = hashes[order]
        longest = int(sorted_lengths[0]) if len(sorted_lengths) else 0
        active = len(order)
        for j in range(longest):
            while active and sorted_lengths[active - 1] <= j:
                active -= 1
            byte_values = data[sorted_starts[:active] + j].astype(np.uint64)
            sorted_hashes[:active] = (sorted_hashes[:active] ^ byte_values) * _FNV_PRIME
        hashes[order] = sorted_hashes
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xFF51AFD7ED558CCD)
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xC4CEB9FE1A85EC53)
        hashes ^= hashes >> np.uint64(33)
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_train_holdout(df: pl.DataFrame, id_column: str, holdout_share: float = 0.2, salt: str = "credittwin") -> pl.Series:
    """"train" or "holdout" per row, decided by a stable hash of the row's id.

    The same id always lands on the same side (across runs, processes, machines
    and polars versions), so re-uploading a tape with extra loans keeps the old
    loans where they were. Ids are compared as text, so 123 and "123" agree.

    Args:
        df: the loans table.
        id_column: the column keying the split (the loan id, or a privacy unit's id as
            `split_by_unit` passes it); it must have no nulls.
        holdout_share: the expected share of holdout rows, 0 < share < 1.
        salt: changes the split as a whole (e.g. for a fresh holdout).

    Returns:
        A String Series named "split", aligned with `df`.
    """
    if not isinstance(holdout_share, (int, float)) or not math.isfinite(holdout_share) or not 0.0 < holdout_share < 1.0:
        raise InvalidDataError(
            f"holdout share must be strictly between 0 and 1, got {holdout_share!r}.",
            column=id_column,
            fix="set holdout_share in tenant.yaml to a number such as 0.2.",
        )
    if id_column not in df.columns:
        raise InvalidDataError("is not a column of the loans table.", column=id_column, fix="name the loan id column under id_columns in tenant.yaml.")
    ids = df.get_column(id_column)
    if ids.null_count():
        raise InvalidDataError(
            f"{ids.null_count()} rows have no loan id, so they cannot be split deterministically.",
            column=id_column,
            fix="give every loan an id, or drop rows without one before upload.",
        )
    holdout = _stable_unit_hash(ids, salt) < holdout_share
    return pl.Series("split", holdout, dtype=pl.Boolean).replace_strict({True: "holdout", False: "train"}, return_dtype=pl.String)


def split_by_unit(
    df: pl.DataFrame,
    unit_column: str | None,
    id_column: str | None,
    holdout_share: float = 0.2,
    salt: str = "credittwin",
) -> pl.Series:
    """"train" or "holdout" per row, with every loan of one privacy unit (a borrower) on the same side.

    The side is `split_train_holdout`'s stable hash of the unit's id: the value
    of `unit_column`, so a borrower's loans never sit on both sides of the
    membership audit. A loan whose unit is null is a unit of its own (as
    `models.twin.dp.bound_units` counts it), keyed by its loan id or, without one,
    its row number, behind a prefix no unit id starts with. Without a
    `unit_column` each loan is its own unit: the split by loan id (or by row
    number when there is no loan id), exactly as before units existed.

    Args:
        df: the loans table.
        unit_column: the column naming the privacy unit, or None.
        id_column: the loan id column, or None.
        holdout_share: the expected share of holdout units, 0 < share < 1.
        salt: changes the split as a whole.

    Returns:
        A String Series named "split", aligned with `df`.
    """
    row = pl.int_range(0, pl.len()).cast(pl.String)
    if unit_column is None:
        if id_column is not None:
            return split_train_holdout(df, id_column, holdout_share=holdout_share, salt=salt)
        keys = df.select(row.alias("_unit"))
    else:
        if unit_column not in df.columns:
            raise InvalidDataError("is not a column of the loans table.", column=unit_column,
                                   fix="name the borrower column under privacy.unit_column in tenant.yaml.")
        # The NUL prefix keeps a loan standing alone from sharing a key with a real unit id.
        own = pl.lit("\0row\0") + row
        if id_column is not None:
            loan = pl.lit("\0loan\0") + pl.col(id_column).cast(pl.String)
            own = pl.when(pl.col(id_column).is_not_null()).then(loan).otherwise(own)
        keys = df.select(pl.coalesce(pl.col(unit_column).cast(pl.String), own).alias("_unit"))
    return split_train_holdout(keys, "_unit", holdout_share=holdout_share, salt=salt)
