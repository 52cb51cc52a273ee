"""BOS-aligned best-fit packing of tokenized documents into rows, as in the original (CPU and CUDA)."""
from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from trainer.errors import CorruptData, DataMissing


class TokenDocs:
    """One prepared split: `<split>.tokens.npy` (docs back to back, each starting with BOS)
    and `<split>.offsets.npy` (n_docs + 1 start offsets)."""

    def __init__(self, directory: str | Path, split: str):
        d = Path(directory)
        tp, op = d / f"{split}.tokens.npy", d / f"{split}.offsets.npy"
        if not tp.exists() or not op.exists():
            raise DataMissing(f"split {split!r} not prepared in {d} (run `swarm prepare`)")
        try:
            self.tokens = np.load(tp, mmap_mode="r")
            self.offsets = np.load(op)
        except Exception as e:
            raise CorruptData(f"corrupt token file in {d}: {type(e).__name__}") from None
        if self.offsets.ndim != 1 or len(self.offsets) < 2 or int(self.offsets[-1]) != len(self.tokens):
            raise CorruptData(f"corrupt token file in {d}: offsets do not match tokens of {split!r}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[int(self.offsets[i]):int(self.offsets[i + 1])])


def best_fit_rows(docs: TokenDocs, row_len: int, *, seed: int | None = None,
                  buffer_size: int = 256, epochs: int | None = None) -> Iterator[np.ndarray]:
    """Rows of exactly row_len tokens, no padding: each row takes the largest buffered doc
    that still fits; when none fits, the shortest is cropped to fill the row (its rest is
    dropped, so every row starts at a document start, i.e. with BOS). seed=None keeps
    document order (evaluation); a seed reshuffles every epoch (training)."""
    if len(docs) == 0:
        raise DataMissing("split has no documents")
    epoch = 0

    def doc_stream() -> Iterator[np.ndarray]:
        nonlocal epoch
        while epochs is None or epoch < epochs:
            order = list(range(len(docs)))
            if seed is not None:
                random.Random(seed * 1_000_003 + epoch).shuffle(order)
            for i in order:
                yield docs.doc(i)
            epoch += 1

    stream = doc_stream()
    buf: list[np.ndarray] = []
    exhausted = False
    while True:
        row: list[np.ndarray] = []
        remaining = row_len
        while remaining > 0:
            while not exhausted and len(buf) < buffer_size:
                try:
                    buf.append(next(stream))
                except StopIteration:
                    exhausted = True
            if not buf:
                return  # a partial row is never emitted
            best = -1
            for j, d in enumerate(buf):
                if len(d) <= remaining and (best < 0 or len(d) > len(buf[best])):
                    best = j
            if best >= 0:
                d = buf.pop(best)
            else:
                j = min(range(len(buf)), key=lambda k: len(buf[k]))
                d = buf.pop(j)[:remaining]
            row.append(d)
            remaining -= len(d)
        yield np.concatenate(row)


def batches(docs: TokenDocs, batch_size: int, seq_len: int, *, seed: int | None = None,
            epochs: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) int64 arrays of shape (batch_size, seq_len); y is x shifted by one."""
    rows = best_fit_rows(docs, seq_len + 1, seed=seed, epochs=epochs)
    while True:
        chunk = []
        for _ in range(batch_size):
            r = next(rows, None)
            if r is None:
                return
            chunk.append(r)
        a = np.stack(chunk).astype(np.int64)
        yield np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, 1:])
