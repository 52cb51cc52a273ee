"""BPE tokenizer: rustbpe trained on the train split, served as a tiktoken Encoding with `<|bos|>`."""
from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tiktoken

from trainer.errors import CorruptData, DataMissing
from trainer.fsutil import atomic_write

# GPT-4 style split pattern, digits in groups of at most two (as in the original).
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ["<|bos|>"]
BOS = "<|bos|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> tiktoken.Encoding:
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in tok.get_mergeable_ranks()}
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name=f"swarm{vocab_size}", pat_str=tok.get_pattern(),
                             mergeable_ranks=ranks, special_tokens=specials)


def token_bytes(enc: tiktoken.Encoding) -> np.ndarray:
    """Bytes per token id (0 for special tokens, so they never count in bits per byte)."""
    special = set(enc._special_tokens.values())
    out = np.zeros(enc.n_vocab, dtype=np.int32)
    for i in range(enc.n_vocab):
        if i not in special:
            out[i] = len(enc.decode_single_token_bytes(i))
    return out


def save_tokenizer(enc: tiktoken.Encoding, path: Path) -> None:
    state = {"name": enc.name, "pat_str": enc._pat_str,
             "mergeable_ranks": enc._mergeable_ranks, "special_tokens": enc._special_tokens}
    atomic_write(path, lambda f: pickle.dump(state, f))


def load_tokenizer(path: Path) -> tiktoken.Encoding:
    path = Path(path)
    if not path.exists():
        raise DataMissing(f"tokenizer not prepared: {path} (run `swarm prepare`)")
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
        return tiktoken.Encoding(**state)
    except Exception as e:
        raise CorruptData(f"corrupt tokenizer {path}: {type(e).__name__}") from None


def encode_docs(enc: tiktoken.Encoding, docs: Iterable[str], batch: int = 512) -> Iterator[list[int]]:
    """Each document as [BOS] + tokens."""
    bos = enc.encode_single_token(BOS)
    buf: list[str] = []
    for d in docs:
        buf.append(d)
        if len(buf) >= batch:
            for ids in enc.encode_ordinary_batch(buf):
                yield [bos] + ids
            buf = []
    if buf:
        for ids in enc.encode_ordinary_batch(buf):
            yield [bos] + ids
