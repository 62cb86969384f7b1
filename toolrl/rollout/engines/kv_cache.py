"""The decoding KV cache: keys and values of a batch of left-padded rows, preallocated and
written in place (`KVCache`), for `FastDecoder` (fast_decode.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

GROWTH = 128  # cache columns added at a time


@dataclass
class KVCache:
    """Keys and values of a batch of left-padded rows, written in place.

    Rows [0, rows) are in use (the batch); later rows are spare room for requests that join.
    Columns [start, end) are in use; all rows write column `end` next. `valid[b, c]` is True
    where column c holds one of row b's tokens (False: padding). For rows in use, columns
    outside [start, end) are never valid, and columns inside hold finite numbers (padding's
    attention weight is 0, but 0 · NaN is NaN).

    A finished row's slot is refilled by moving the last row into it (`keep`), and new rows go
    into spare slots right-aligned at `end` (`append`, `join`): none of them copies the whole
    cache unless it must grow.
    """

    data: Tensor  # [layers, 2 (k, v), row capacity, kv_heads, column capacity, head_dim]
    valid: Tensor  # [row capacity, column capacity] bool
    rows: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.rows

    @classmethod
    def allocate(cls, like: Tensor, rows: int, width: int, capacity: int = 0) -> KVCache:
        """Room for `rows` rows (`capacity` if larger) and `width` used columns plus GROWTH,
        uninitialised: the caller writes columns [0, width) of the rows in use, and a column
        past `end` is always written before it is read."""
        layers, kv, _, heads, _, dim = like.shape
        slots = max(rows, capacity)
        data = like.new_empty(layers, kv, slots, heads, width + GROWTH, dim)
        valid = torch.zeros(slots, width + GROWTH, dtype=torch.bool, device=like.device)
        return cls(data, valid, rows, 0, width)

    def reserve(self) -> None:
        """Make room for one more column (moving the used columns to the front if needed)."""
        self.make_room(self.rows, 0)

    def copy_rows(self, source: KVCache, rows, source_rows, first: int | None = None) -> None:
        """Write `source_rows` of `source`, columns [first (default: its start), its end), into
        `rows`, right-aligned at this cache's `end`."""
        used = slice(source.start if first is None else first, source.end)
        columns = slice(self.end - (used.stop - used.start), self.end)
        self.data[:, :, rows, :, columns] = source.data[:, :, source_rows, :, used]
        self.valid[rows, columns] = source.valid[source_rows, used]

    def row(self, index: int) -> Tensor:
        """Row `index`'s keys and values without padding, [layers, 2, kv_heads, n, head_dim]."""
        columns = self.valid[index, self.start : self.end].nonzero().squeeze(-1) + self.start
        return self.data[:, :, index].index_select(3, columns)

    def gather(self, rows: Tensor) -> KVCache:
        """A new cache of `rows` (repeats allowed), without columns that are padding in all."""
        valid = self.valid[rows, self.start : self.end]
        first = self.start + int(valid.any(0).long().argmax())
        out = KVCache.allocate(self.data, len(rows), self.end - first)
        out.copy_rows(self, slice(None), rows, first)
        return out

    def keep(self, rows: list[int]) -> list[int]:
        """Keep only `rows` (ascending), in place: each freed slot below the new row count takes
        one of the surviving rows above it. Returns the old index of each new row."""
        count, survivors = len(rows), set(rows)
        holes = [i for i in range(count) if i not in survivors]
        movers = [r for r in rows if r >= count]
        if holes:
            to = torch.tensor(holes, device=self.data.device)
            source = torch.tensor(movers, device=self.data.device)
            used = slice(self.start, self.end)
            self.data[:, :, to, :, used] = self.data[:, :, source, :, used]
            self.valid[to] = self.valid[source]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        self.rows = count
        if count:  # leading columns no remaining row attends to are no longer in use
            in_use = self.valid[:count, self.start : self.end].any(0)
            self.start += int(in_use.long().argmax())
        return order

    def append(self, other: KVCache) -> KVCache:
        """This cache with `other`'s rows after its own: in place when there are spare rows and
        columns enough, otherwise a new, larger cache."""
        width = other.end - other.start
        rows = slice(self.rows, self.rows + other.rows)
        if rows.stop > self.data.shape[2] or width > self.end:
            out = KVCache.allocate(
                self.data, rows.stop, max(self.end - self.start, width), 2 * rows.stop
            )
            out.data[:, :, : out.rows, :, : out.end].zero_()
            out.copy_rows(self, slice(0, self.rows), slice(0, self.rows))
            out.copy_rows(other, rows, slice(0, other.rows))
            return out
        start = min(self.start, self.end - width)
        self.data[:, :, : rows.stop, :, start : self.start].zero_()
        self.data[:, :, rows, :, self.start : self.end - width].zero_()
        self.valid[rows] = False
        self.copy_rows(other, rows, slice(0, other.rows))
        self.rows, self.start = rows.stop, start
        return self

    def make_room(self, rows: int, before_end: int) -> None:
        """Capacity for `rows` rows in all, at least `before_end` columns before `end` and a
        column at `end`: if any is missing, a larger cache with the used columns copied
        right-aligned (and GROWTH columns after them)."""
        capacity = self.data.shape[2]
        if rows <= capacity and before_end <= self.end < self.data.shape[4]:
            return
        used = self.end - self.start
        capacity = capacity if rows <= capacity else max(rows, 2 * capacity)
        grown = KVCache.allocate(self.data, self.rows, max(used, before_end), capacity)
        grown.copy_rows(self, slice(0, self.rows), slice(0, self.rows))
        self.data, self.valid = grown.data, grown.valid
        self.start, self.end = grown.end - used, grown.end

    def join(self, prefixes: list[Tensor], span: int) -> slice:
        """Add one row per stored prefix ([layers, 2, kv_heads, n_i, head_dim], as `row` returns
        it) so that its next `span` tokens fill columns [end + 1 − span, end + 1), ending in the
        column the next decoding step writes; the prefix fills the n_i columns before them.
        Marks the prefix columns valid (the caller marks which of the `span` columns hold
        tokens) and returns the new rows."""
        widest = max(prefix.shape[3] for prefix in prefixes)
        self.make_room(self.rows + len(prefixes), widest + span - 1)
        new = slice(self.rows, self.rows + len(prefixes))
        first = self.end + 1 - span  # the span's first column
        start = min(self.start, first - widest)
        # Columns coming into use must hold finite numbers in every row (0 · NaN is NaN).
        self.data[:, :, : self.rows, :, start : self.start].zero_()
        self.data[:, :, new, :, start : self.end + 1].zero_()
        self.valid[new] = False
        for row, prefix in enumerate(prefixes, start=new.start):
            self.data[:, :, row, :, first - prefix.shape[3] : first] = prefix
            self.valid[row, first - prefix.shape[3] : first] = True
        self.rows, self.start = new.stop, start
        return new
