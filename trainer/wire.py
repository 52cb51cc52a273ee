"""The wire between train.py's sandbox and the runner (locked): frame layouts both sides share.

Child -> parent, on the event pipe: JSON lines of at most MAX_LINE bytes (`ready`, `batch`,
`submit`, `exported`); a `submit` line is followed by exactly `nbytes` raw tensor bytes.
Parent -> child, on the data pipe: a HEADER then rows*(cols+1) tokens of the frame's dtype
(row r of x is tokens[r, :-1], of y tokens[r, 1:]). Nothing the child sends is trusted: the
parent parses it defensively and counts what it cannot use.
"""
from __future__ import annotations

import struct

MAX_LINE = 64 * 1024                 # bytes; a longer event line is dropped and counted
HEADER = struct.Struct("<4sIIII")    # magic, kind, rows, cols, itemsize
MAGIC = b"SWB1"

# Frame kinds on the data pipe.
END = 0        # the budget is spent (or submit came): no more real batches, ever
REAL = 1       # rows of the train split; the first one starts the clock
SYNTHETIC = 2  # random tokens for compile/warm-up before the clock
REFUSED = 3    # the request was not valid (shape too large, synthetic after the clock...)
SPEC = 4       # to a standby harness: its run's spec, `rows` bytes of JSON follow

# Tensor dtypes a submit may carry, by name (torch's str(dtype) without "torch.").
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
          "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
