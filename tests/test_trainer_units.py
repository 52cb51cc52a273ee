"""Tokenizer round trip and token bytes, best-fit packing, and evaluate_bpb on known models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.dataloader import TokenDocs, batches, best_fit_rows
from trainer.metric import MetricError, check_causal, eval_batches, evaluate_bpb
from trainer.tokenizer import BOS, encode_docs, token_bytes, train_tokenizer

TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles. ") * 40


def test_tokenizer_round_trip_and_token_bytes():
    enc = train_tokenizer([TEXT, "Ünïcödé and digits 12345"], 300)
    assert enc.n_vocab == 300 and enc.encode_single_token(BOS) == 299
    for s in ("whether 'tis nobler", "Ünïcödé 2026!", "\n\n  spaced  "):
        assert enc.decode(enc.encode_ordinary(s)) == s
    tb = token_bytes(enc)
    assert tb[299] == 0 and (tb[:299] > 0).all()
    ids = enc.encode_ordinary(TEXT)
    assert int(tb[ids].sum()) == len(TEXT.encode())
    doc = next(encode_docs(enc, ["abc"]))
    assert doc[0] == 299 and enc.decode(doc[1:]) == "abc"


def make_docs(tmp_path, lengths, bos=0, seed=0) -> TokenDocs:
    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[bos], rng.integers(1, 50, n - 1)]).astype(np.uint16) for n in lengths]
    np.save(tmp_path / "train.tokens.npy", np.concatenate(docs))
    np.save(tmp_path / "train.offsets.npy", np.cumsum([0] + [len(d) for d in docs]).astype(np.int64))
    return TokenDocs(tmp_path, "train")


def test_best_fit_rows_are_bos_aligned_and_full(tmp_path):
    lengths = list(np.random.default_rng(1).integers(2, 40, 300))
    docs = make_docs(tmp_path, lengths)
    pieces = {tuple(docs.doc(i)) for i in range(len(docs))}
    rows = list(best_fit_rows(docs, 33, seed=None, epochs=1))
    assert rows and all(len(r) == 33 for r in rows)  # exactly full: no padding
    for r in rows:
        assert r[0] == 0  # every row starts at a document start
        starts = list(np.flatnonzero(r == 0)) + [len(r)]
        for a, b in zip(starts, starts[1:]):  # each segment is a whole document or a cropped prefix
            seg = tuple(r[a:b])
            assert any(p[: len(seg)] == seg for p in pieces)
    # utilization: only cropping drops tokens, and at most one crop per row
    used = sum(len(r) for r in rows)
    assert used == 33 * len(rows) and used <= sum(lengths)


def test_training_order_is_seeded(tmp_path):
    docs = make_docs(tmp_path, [30] * 64)
    a = next(batches(docs, 4, 16, seed=1))[0]
    b = next(batches(docs, 4, 16, seed=1))[0]
    c = next(batches(docs, 4, 16, seed=2))[0]
    x, y = next(batches(docs, 4, 16, seed=1))
    assert (a == b).all() and not (a == c).all()
    assert x.shape == y.shape == (4, 16) and (x[:, 1:] == y[:, :-1]).all()


def test_uniform_model_scores_log2_vocab_per_token_over_bytes(tmp_path):
    docs = make_docs(tmp_path, [5, 9, 17, 3, 12] * 40)
    V = 50
    tb = np.ones(V, dtype=np.int32) * 2
    tb[0] = 0  # token 0 plays BOS: special, never counted
    bpb = evaluate_bpb(lambda x: torch.zeros(*x.shape, V), docs, tb, batch=2, seq_len=16, eval_tokens=10**6)
    ys = np.concatenate([y.ravel() for _, y in eval_batches(docs, 2, 16, 10**6)])
    n = int((ys != 0).sum())
    assert (ys == 0).any()  # there were BOS targets to exclude
    assert bpb == pytest.approx(math.log2(V) * n / (2 * n))


def test_metric_rejects_bad_outputs_and_lookahead(tmp_path):
    docs = make_docs(tmp_path, [20] * 50)
    tb = np.ones(50, dtype=np.int32)
    with pytest.raises(MetricError, match=r"not \(batch, seq, vocab\) logits"):
        evaluate_bpb(lambda x: torch.zeros(x.shape[0], 50), docs, tb, batch=2, seq_len=8, eval_tokens=64)
    emb = torch.randn(50, 50)
    x = torch.randint(0, 50, (2, 16))
    check_causal(lambda t: emb[t].cumsum(1), x, 50)
    with pytest.raises(MetricError, match="future tokens"):
        check_causal(lambda t: emb[t] + emb[t].mean(1, keepdim=True), x, 50)


def test_the_smoke_profile_scores_two_batches_and_still_cuts_every_position():
    """cpu-smoke (the slow tier's swarms): cpu's vocabulary and rows, so cpu's prepared data; 2 of
    its eval batches; every position of a row cut by a causality probe at least once; its own
    hardware class, so its results never meet cpu's."""
    from trainer.metric import PROBES_MIN, probes_per_row
    from trainer.profiles import PROFILES, hardware_class

    cpu, smoke = PROFILES["cpu"], PROFILES["cpu-smoke"]
    assert (smoke.vocab_size, smoke.max_seq_len, smoke.eval_batch) == (cpu.vocab_size, cpu.max_seq_len, cpu.eval_batch)
    rows = {p.name: p.eval_tokens // p.max_seq_len for p in (cpu, smoke)}
    assert rows["cpu-smoke"] == 2 * smoke.eval_batch < rows["cpu"]
    k = probes_per_row(rows["cpu-smoke"], smoke.max_seq_len, smoke.probes_min)
    assert k * rows["cpu-smoke"] >= smoke.max_seq_len - 1 and k * rows["cpu-smoke"] < PROBES_MIN
    assert probes_per_row(rows["cpu"], cpu.max_seq_len, cpu.probes_min) * rows["cpu"] >= PROBES_MIN
    assert hardware_class("cpu-smoke", threads=1) == hardware_class("cpu", threads=1) + "-cpu-smoke"
