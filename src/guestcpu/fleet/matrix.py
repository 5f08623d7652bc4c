"""Feature sets packed into numpy words: rows are hosts (or pins), columns 64 features a word (pure).

A fleet of ten thousand hosts and a hundred thousand guests is a few thousand
distinct capability profiles and guest CPUs at most; the answers AND, OR and test
subsets over whole rows at once instead of looping over Python sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Words = npt.NDArray[np.uint64]


@dataclass
class FeatureIndex:
    """Feature name -> column; grows as names are seen."""

    names: list[str] = field(default_factory=list)
    columns: dict[str, int] = field(default_factory=dict)

    def column(self, name: str) -> int:
        found = self.columns.get(name)
        if found is None:
            found = self.columns[name] = len(self.names)
            self.names.append(name)
        return found

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            self.column(name)

    @property
    def words(self) -> int:
        return max(1, (len(self.names) + 63) // 64)

    def pack(self, rows: Sequence[Iterable[str]]) -> Words:
        """One row of words per feature set; names not in the index are added first."""
        sets = [list(row) for row in rows]
        for row in sets:
            self.add(row)
        bits = np.zeros((len(sets), self.words * 64), dtype=np.bool_)
        for i, row in enumerate(sets):
            if row:
                bits[i, [self.columns[n] for n in row]] = True
        return pack_bool(bits)

    def unpack(self, row: Words) -> list[str]:
        flags = unpack_bool(row.reshape(1, -1))[0]
        return [self.names[i] for i in np.flatnonzero(flags[: len(self.names)])]


def pack_bool(bits: npt.NDArray[np.bool_]) -> Words:
    """(n, 64·w) booleans -> (n, w) uint64, column j in word j // 64, bit j % 64."""
    n, width = bits.shape
    packed = np.packbits(bits.reshape(n, width // 8, 8), axis=2, bitorder="little").reshape(n, width // 8)
    return packed.view(np.uint64).reshape(n, width // 64).copy()


def unpack_bool(words: Words) -> npt.NDArray[np.bool_]:
    n = words.shape[0]
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(n, -1)
    unpacked: npt.NDArray[np.bool_] = np.unpackbits(as_bytes, axis=1, bitorder="little").astype(np.bool_)
    return unpacked


def widen(words: Words, width: int) -> Words:
    """The same rows with zero words appended up to ``width`` (an index grew after packing)."""
    if words.shape[1] >= width:
        return words
    return np.hstack([words, np.zeros((words.shape[0], width - words.shape[1]), dtype=np.uint64)])


def and_all(rows: Words) -> Words:
    result: Words = np.bitwise_and.reduce(rows, axis=0)
    return result


def or_all(rows: Words) -> Words:
    result: Words = np.bitwise_or.reduce(rows, axis=0)
    return result


def subset_matrix(need: Words, have: Words, *, block: int = 4096) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: every bit of ``need[i]`` is in ``have[j]`` (blocks keep memory flat)."""
    out = np.empty((need.shape[0], have.shape[0]), dtype=np.bool_)
    inverse = ~have
    for start in range(0, need.shape[0], block):
        chunk = need[start:start + block]
        lacking = chunk[:, None, :] & inverse[None, :, :]
        out[start:start + block] = ~lacking.any(axis=2)
    return out


def column_lacking(rows: Words, column: int) -> npt.NDArray[np.bool_]:
    """Which rows do not have ``column``."""
    word, bit = divmod(column, 64)
    mask = np.uint64(1) << np.uint64(bit)
    result: npt.NDArray[np.bool_] = (rows[:, word] & mask) == 0
    return result
