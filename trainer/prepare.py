"""`swarm prepare`: fetch a source, split it, train the BPE tokenizer, write token files (locked, idempotent)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.dataloader import TokenDocs
from trainer.errors import DataMissing, TrainerError
from trainer.fsutil import atomic_write
from trainer.metric import MetricError, unigram_bpb
from trainer.profiles import PROFILES, Profile, detect_profile, get_profile
from trainer.sources import SPLITS, Source, get_source
from trainer.tokenizer import encode_docs, save_tokenizer, token_bytes, train_tokenizer

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
TOKENIZER_MAX_CHARS = 1_000_000_000  # enough text for a good BPE; more only costs time
CURRENT = "current.json"


def data_root(data_dir: str | Path | None = None) -> Path:
    """`data_dir`, else $SWARM_DATA_DIR, else ~/.cache/autoresearch-swarm."""
    d = data_dir or os.environ.get("SWARM_DATA_DIR") or Path.home() / ".cache" / "autoresearch-swarm"
    return Path(d).expanduser()


def _atomic_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1))


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


@dataclass(frozen=True)
class Prepared:
    """Where one prepared (source, vocab) lives, as the runner and train.py's loader need it."""

    dir: Path                 # <root>/<source_id>/tok<vocab>
    source_id: str
    unigram_bpb: float
    forbidden: tuple[str, ...]  # paths a train.py must never open (val/confirm and raw text)

    def token_bytes(self) -> np.ndarray:
        return np.load(self.dir / "token_bytes.npy")

    def split(self, name: str) -> TokenDocs:
        return TokenDocs(self.dir, name)


def _tokenize_split(enc, docs, out_dir: Path, split: str) -> int:
    dtype = np.uint16 if enc.n_vocab < 65536 else np.uint32
    parts, offsets, n = [], [0], 0
    for ids in encode_docs(enc, docs):
        parts.append(np.asarray(ids, dtype=dtype))
        n += len(ids)
        offsets.append(n)
    if len(offsets) < 2:
        raise DataMissing(f"split {split!r} of the source has no documents")
    _atomic_npy(out_dir / f"{split}.tokens.npy", np.concatenate(parts))
    _atomic_npy(out_dir / f"{split}.offsets.npy", np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


def _prepare_vocab(src: Source, src_dir: Path, profile: Profile) -> None:
    out = src_dir / f"tok{profile.vocab_size}"
    if (out / "meta.json").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def capped(docs):
        n = 0
        for d in docs:
            yield d
            n += len(d)
            if n >= TOKENIZER_MAX_CHARS:
                return

    enc = train_tokenizer(capped(src.documents("train", src_dir)), profile.vocab_size)
    tb = token_bytes(enc)
    save_tokenizer(enc, out / "tokenizer.pkl")
    _atomic_npy(out / "token_bytes.npy", tb)
    ndocs = {s: _tokenize_split(enc, src.documents(s, src_dir), out, s) for s in SPLITS}
    try:
        uni = unigram_bpb(TokenDocs(out, "train"), TokenDocs(out, "val"), tb, batch=profile.eval_batch,
                          seq_len=profile.max_seq_len, eval_tokens=profile.eval_tokens)
    except MetricError:
        raise DataMissing(f"val split of {src.id} is too small to score: it needs at least "
                          f"{profile.eval_batch * (profile.max_seq_len + 1)} tokens") from None
    # meta.json last: its presence means the whole folder is complete.
    _atomic_json(out / "meta.json", {
        "version": FORMAT_VERSION, "source": src.id, "vocab_size": profile.vocab_size,
        "docs": ndocs, "tokens": {s: int(len(TokenDocs(out, s).tokens)) for s in SPLITS},
        "unigram_bpb": uni, "unigram_eval": {"seq_len": profile.max_seq_len, "eval_tokens": profile.eval_tokens},
        "seconds": round(time.time() - t0, 2)})
    log.info("prepared %s vocab %d in %.1fs (unigram_bpb %.4f)", src.id, profile.vocab_size, time.time() - t0, uni)


def prepare(source: str = "bundled", profiles: list[str] | None = None,
            data_dir: str | Path | None = None, num_shards: int = 8) -> Path:
    """Prepare `source` for the given profiles (default: the detected one). Idempotent; two
    processes doing it at once serialize on a file lock. Returns the data root."""
    import filelock

    root = data_root(data_dir)
    src = get_source(source, num_shards)
    profs = [get_profile(p) for p in (profiles or [detect_profile()])]
    src_dir = root / src.id
    src_dir.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(src_dir / ".lock")):
        src.fetch(src_dir)
        _atomic_json(src_dir / "source.json", {"source": src.id, "forbidden": src.forbidden_paths(src_dir)})
        for p in profs:
            _prepare_vocab(src, src_dir, p)
        _atomic_json(root / CURRENT, {"source": src.id})
    return root


def locate(profile: Profile | str | None = None, data_dir: str | Path | None = None,
           source_id: str | None = None) -> Prepared:
    """The prepared data for a profile; raises DataMissing naming what to run."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    root = data_root(data_dir)
    if not root.is_dir():
        raise DataMissing(f"data dir does not exist: {root} (run `swarm prepare`)")
    if source_id is None:
        cur = root / CURRENT
        if not cur.exists():
            raise DataMissing(f"no prepared data in {root} (run `swarm prepare`)")
        source_id = json.loads(cur.read_text())["source"]
    d = root / source_id / f"tok{prof.vocab_size}"
    if not (d / "meta.json").exists():
        raise DataMissing(f"{source_id} not prepared for profile {prof.name} in {root} "
                          f"(run `swarm prepare --profile {prof.name}`)")
    meta = json.loads((d / "meta.json").read_text())
    forb = json.loads((root / source_id / "source.json").read_text()).get("forbidden", [])
    forb += [str(d / f"{s}.{k}.npy") for s in ("val", "confirm") for k in ("tokens", "offsets")]
    return Prepared(dir=d, source_id=source_id, unigram_bpb=float(meta["unigram_bpb"]), forbidden=tuple(forb))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="swarm prepare", description="Prepare training data and tokenizer.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  swarm prepare --source bundled --profile all")
    ap.add_argument("--source", default="bundled",
                    help="bundled (default, offline), climbmix, tinystories, or local:PATH")
    ap.add_argument("--profile", default=None, help="cpu, gpu or all (default: detected)")
    ap.add_argument("--data-dir", default=None, help="default $SWARM_DATA_DIR or ~/.cache/autoresearch-swarm")
    ap.add_argument("--num-shards", type=int, default=8, help="climbmix train shards")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profiles = list(PROFILES) if args.profile == "all" else ([args.profile] if args.profile else None)
    try:
        root = prepare(args.source, profiles, args.data_dir, args.num_shards)
    except TrainerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in profiles or [detect_profile()]:
        prep = locate(p, root)
        print(f"prepared {prep.source_id} for profile {p}: {prep.dir} unigram_bpb={prep.unigram_bpb:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
