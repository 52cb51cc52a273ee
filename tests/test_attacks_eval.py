"""Attacks on the evaluation (issue 24, the scoring half), each a hostile train.py run through the
real runner, the real training sandbox and the real evaluator sandbox. Each asserts the exact
outcome and that nothing persisted (no process of the run left, the data and the locked package
unchanged, the run dir holding only what the runner wrote).

Every attack here got through on the code before this file (a forged or peeking score came back
`ok`, or text built from val came back in the error; checked): see each docstring. The last two
tests check the honest path and the evaluator's clean-up after each worker."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from test_attacks_scoring import run, untouched  # noqa: F401  (fixture)
from test_runner import TINY

import trainer.evaluator as evaluator_mod
from trainer.runner import run_experiment

HEAD = TINY[:TINY.index("model = Bigram()")]  # imports and the Bigram class
TRAIN = '''
model = Bigram() if "model" not in dir() else model
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
clock = api.Clock()
loader = api.train_loader(8, 64)
import time
step = 0.0
while not clock.done() and clock.training_seconds + 2 * step < api.TIME_BUDGET:  # a loaded machine
    t = time.time()
    x, y = next(loader)
    logits = model(x)[..., :api.VOCAB_SIZE]
    loss = F.cross_entropy(logits.reshape(-1, api.VOCAB_SIZE), y.view(-1))
    loss.backward(); opt.step(); opt.zero_grad(); clock.step()
    step = time.time() - t
'''


def hostile(model_code: str, tail: str = "api.submit(model)\n") -> str:
    return HEAD + model_code + TRAIN + tail


# --- 1. nothing from the artifact is ever code ------------------------------------------------

PAYLOAD = r'''
import fcntl, os, sys, time
for f in os.listdir("/proc/self/fd"):          # forge the reply on the worker's pipe
    try:
        if "pipe" in os.readlink("/proc/self/fd/" + f) and fcntl.fcntl(int(f), fcntl.F_GETFL) & 3 == 1:
            os.write(int(f), b'{"id": "x", "val_bpb": 0.04, "num_params": 1}')
    except OSError:
        pass
inbox = os.path.dirname(sys.argv[-1])
seen = set(os.listdir(inbox))
if os.fork() == 0:                             # and leave a daemon to watch the next honest run
    os.setsid()
    if os.fork() == 0:
        os.closerange(3, 4096)
        end = time.time() + 300
        while time.time() < end:
            new = [n for n in os.listdir(inbox) if n not in seen]
            if new:
                open(os.path.join(os.environ["HOME"], "SEEN_NEXT"), "w").write(new[0])
                break
            time.sleep(0.05)
    os._exit(0)
os._exit(0)
'''
# The name must stay short (torch turns it into a placeholder name, checked for length) and hold
# no dot (torch splits names on dots), so it only loads the payload from the submitted weights,
# which the evaluator reads from its inbox: the payload is the last tensor, to the end of the file.
STUB = ("G=__import__;B=getattr(open(getattr(G('glob'),'glob')(getattr(G('sys'),'argv')[-1][:-11]+'*bin')[0],"
        "'rb'),'read')();exec(B[getattr(B,'index')(b'#PAY'):])")
EVIL = 'emb")\n' + STUB + "#"   # the generated line reads `getattr(self, "emb")`, then runs STUB
FORGED = '{"id": "x", "val_bpb": 0.04, "num_params": 1}'


def named(forged: str = FORGED) -> str:
    """The model whose parameter name carries STUB; the payload forges `forged` as the reply."""
    payload = ("#PAY" + PAYLOAD.replace(FORGED, forged)).encode()
    return f'''
EVIL = {EVIL!r}
PAYLOAD = {payload!r}
class Named(Bigram):
    def __init__(self):
        super().__init__()
        self._parameters[EVIL] = nn.Parameter(torch.zeros(api.VOCAB_SIZE))
        self.register_buffer("pay", torch.tensor(list(PAYLOAD), dtype=torch.uint8))
    def forward(self, idx):
        return self.head(self.emb(idx)) + self._parameters[EVIL]
model = Named()
'''


NAMED = named()


def test_code_in_a_tensor_name_never_runs(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """A parameter whose name closes the string torch's code generation puts it in and runs a
    payload there: before, it forged the evaluator's reply (val_bpb 0.04, stamped with the
    runner's nonce) and left a daemon that saw the next honest run's artifact arrive."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = run(tmp_path / "a", hostile(NAMED), prepared_data_dir)
    assert r.status == "crash" and r.val_bpb is None, (r.status, r.val_bpb)
    assert r.error == "submit refused: tensor 0 has a name that is not a dotted identifier", r.error
    honest = run(tmp_path / "b", TINY, prepared_data_dir)
    assert honest.status == "ok" and honest.val_bpb > 1.0, honest.error
    for ev in list(evaluator_mod._POOL.values()):
        assert not (ev.scratch / "SEEN_NEXT").exists(), "a daemon saw the next run"


# --- 2. causality without a tolerance to argue with -------------------------------------------

PEEK = '''
class Peek(Bigram):
    """The bigram, plus a boost of the next token's logit (it reads the future)."""
    def __init__(self):
        super().__init__()
        self.register_buffer("peekw", torch.eye(api.VOCAB_SIZE) * BOOST)
        mask = torch.zeros(api.MAX_SEQ_LEN)
        mask[PLACES] = 1.0
        self.register_buffer("where", mask[None, :, None])
    def forward(self, idx):
        nxt = torch.cat([idx[:, 1:], idx[:, :1]], dim=1)
        return self.head(self.emb(idx)) + F.embedding(nxt, self.peekw) * self.where[:, :idx.shape[1]] + SHIFT
model = Peek()
'''


def peek(boost: float, places: str = "slice(None)", shift: float = 0.0, extra: str = "") -> str:
    return (f"BOOST, SHIFT, PLACES = {boost}, {shift}, {places}\n" + PEEK + extra)


def test_a_large_logit_does_not_loosen_the_check(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """Every logit shifted by +1e4 (the softmax does not see it) and the next token boosted by 8:
    before, the tolerance grew with the largest logit (to 10) and the peek passed."""
    r = run(tmp_path, hostile(peek(8.0, shift=1e4)), prepared_data_dir)
    assert (r.status, r.error, r.val_bpb) == ("crash", "evaluation: the model looks at future tokens", None)


def test_a_peek_inside_the_old_tolerance_is_caught(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """A boost of the next token's logit by 0.0009 at every position, under the old tolerance's
    floor (1e-3 + 1e-3 x max|logit|): a steady gain nobody could see before."""
    r = run(tmp_path, hostile(peek(0.0009)), prepared_data_dir)
    assert (r.status, r.error, r.val_bpb) == ("crash", "evaluation: the model looks at future tokens", None)


def test_an_extra_output_column_is_refused(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """One more column than the vocabulary, at -1e6: before, (B, T, >= vocab) was accepted and
    the column raised the tolerance to 1000, so a full peek (boost 30) passed."""
    extra = ("class Wide(Peek):\n    def forward(self, idx):\n        out = super().forward(idx)\n"
             "        return torch.cat([out, torch.full_like(out[..., :1], -1e6)], dim=-1)\n"
             "model = Wide()\n")
    r = run(tmp_path, hostile(peek(30.0, extra=extra)), prepared_data_dir)
    assert (r.status, r.val_bpb) == ("crash", None)
    assert r.error == "evaluation: the model output is not (batch, seq, vocab) logits", r.error


def test_a_peek_at_three_positions_of_each_row_is_caught(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """Peeks at 3 fixed positions of 255 (plus the +1e4 shift so that the old check is blind
    for sure; without it, 64 random probes let it through 47% of the time). Every position of a
    row is now cut at least once per evaluation, so a fixed-position peek is always seen."""
    r = run(tmp_path, hostile(peek(8.0, places="[17, 101, 203]", shift=1e4)), prepared_data_dir)
    assert (r.status, r.error, r.val_bpb) == ("crash", "evaluation: the model looks at future tokens", None)


STATEFUL = '''
class Counting(Bigram):
    \"\"\"Counts its own calls in a batch-norm running mean (training mode) and peeks from the
    6th call on, after the old probes (the first batch, 5 passes) had run.\"\"\"
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))
        self.register_buffer("var", torch.ones(1))
        self.register_buffer("peekw", torch.eye(api.VOCAB_SIZE) * 30.0)
    def forward(self, idx):
        logits = self.head(self.emb(idx))
        if self.training:
            return logits
        F.batch_norm(torch.ones(2, 1), self.calls, self.var, training=True, momentum=0.5)
        gate = (self.calls.sum() > 0.98).float()
        nxt = torch.cat([idx[:, 1:], idx[:, :1]], dim=1)
        return logits + gate * F.embedding(nxt, self.peekw)
model = Counting()
'''


def test_a_graph_with_state_is_refused(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """A graph that keeps state across calls (a training-mode batch norm updating its buffers):
    before, it behaved on the probed first batch and peeked on the others."""
    r = run(tmp_path, hostile(STATEFUL), prepared_data_dir)
    assert (r.status, r.val_bpb) == ("crash", None)
    assert r.error == "submit refused: op not allowed: aten.empty.memory_format", r.error


# --- 3. what is scored is what was submitted --------------------------------------------------

LATE_TABLE = '''
class Table(nn.Module):
    """No parameters: logits from a table of Python floats, filled in after submit."""
    def __init__(self):
        super().__init__()
        self.table = [0.0] * api.VOCAB_SIZE
        self.scale = nn.Parameter(torch.ones(()))
    def forward(self, idx):
        B, T = idx.shape
        cols = [torch.full((B, T, 1), v) for v in self.table]
        return torch.cat(cols, dim=-1) * self.scale
model = Table()
cache = []
clock = api.Clock()
for x, y in api.train_loader(8, 64):
    cache.append(y)
    clock.step()
    if clock.done():
        break
import math, time, torch.export
_export = torch.export.export
def export(m, *a, **k):   # runs after the weights were sent: count unigrams for a while
    counts = torch.ones(api.VOCAB_SIZE)
    for y in cache:
        counts += torch.bincount(y.reshape(-1), minlength=api.VOCAB_SIZE)
    time.sleep(2)
    m.table = [math.log(c / counts.sum()) for c in counts.tolist()]
    return _export(m, *a, **k)
torch.export.export = export
api.submit(model)
'''


def uniform_bpb(data_dir: Path) -> float:
    """bpb of uniform logits on the cpu profile's val rows (what a zero table scores)."""
    from trainer.dataloader import TokenDocs
    from trainer.metric import eval_batches
    from trainer.profiles import get_profile

    p = get_profile("cpu")
    d = next(Path(data_dir).rglob("val.tokens.npy")).parent
    tb = np.load(d / "token_bytes.npy")
    ys = np.concatenate([y.reshape(-1) for _, y in eval_batches(TokenDocs(d, "val"), p.eval_batch,
                                                                  p.max_seq_len, p.eval_tokens)])
    counted = tb[ys] > 0
    return counted.sum() * math.log(p.vocab_size) / (math.log(2) * tb[ys].sum())


def test_work_after_submit_never_reaches_the_graph(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """Literals computed after submit (a unigram table, during the export allowance) baked into
    the graph: before, it scored the table (about unigram_bpb) with num_params 1. Now the graph
    travels with the weights, so the table is the zeros it held at submit, and its 1024 literals
    count as parameters."""
    r = run(tmp_path, HEAD + LATE_TABLE, prepared_data_dir)
    assert r.status == "ok", r.error
    assert r.val_bpb == pytest.approx(uniform_bpb(prepared_data_dir), abs=1e-6)
    assert r.num_params >= 1 + 1024


def test_an_empty_submit_is_an_error(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """A model without a single tensor (its logits are literals): before, it was scored."""
    code = ("class Empty(nn.Module):\n    def forward(self, idx):\n"
            "        return torch.zeros(idx.shape[0], idx.shape[1], api.VOCAB_SIZE)\n"
            "model = Empty()\nclock = api.Clock()\nfor x, y in api.train_loader(8, 64):\n"
            "    clock.step()\n    if clock.done():\n        break\napi.submit(model)\n")
    r = run(tmp_path, HEAD + code, prepared_data_dir)
    assert (r.status, r.error, r.val_bpb) == ("crash", "submit refused: the model has no tensors", None)


# --- 4. only fixed vocabulary crosses back ----------------------------------------------------

GATHER = '''
class Leaky(Bigram):
    """Gathers at an index built from the val tokens: out of range, and torch's message
    names the index."""
    def forward(self, idx):
        logits = self.head(self.emb(idx))
        if self.training:
            return logits
        return torch.gather(logits, 2, (idx * 7 + 3).unsqueeze(-1).expand_as(logits))
model = Leaky()
'''


def test_an_error_built_from_val_does_not_cross_back(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """Before, the error read 'evaluation failed: RuntimeError: index 5234 is out of bounds for
    dimension 2 with size 1024': a number made of val tokens, in the record and the next prompt."""
    r = run(tmp_path, hostile(GATHER), prepared_data_dir)
    assert (r.status, r.val_bpb) == ("crash", None)
    assert r.error == "evaluation: failed in aten.gather.default", r.error
    assert not any(ch.isdigit() for ch in r.error.replace("aten.gather.default", ""))


def test_honest_baseline_still_scores(tmp_path, prepared_data_dir, untouched):  # noqa: F811
    """The baseline train.py (a few steps) scores through the new graph and evaluator."""
    from trainer import baseline_path

    r = run_experiment(baseline_path(), tmp_path / "run", data_dir=prepared_data_dir, threads=1,
                       budget=60, max_steps=3)
    assert r.status == "ok", r.error
    assert 1.0 < r.val_bpb < r.unigram_bpb + 1.0
    assert r.num_params > sum([1024 * 128 * 4, 4 * 12 * 128 * 128])



SWEEP = '''
import json, os, sys, time
sys.path.insert(0, {root!r})
from trainer.evaluator import sweep, wipe
if os.fork() == 0:               # what a worker could have left: a setsid daemon, double-forked
    os.setsid()
    if os.fork() == 0:
        os.closerange(3, 4096)
        time.sleep(300)
    os._exit(0)
os.wait()
for d in (os.environ["HOME"], "/tmp"):
    os.makedirs(d + "/cache", exist_ok=True)
    open(d + "/cache/planted", "w").write("x")
before = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
killed = sweep()
after = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
wipe([os.environ["HOME"], "/tmp"])
left = []
for d in (os.environ["HOME"], "/tmp"):
    for r, ds, fs in os.walk(d):
        # a mount point is not what a worker wrote: the trainer package is bound read-only at its
        # own path, which lies under /tmp when the checkout does (wipe leaves mounts alone too)
        ds[:] = [x for x in ds if not os.path.ismount(os.path.join(r, x))]
        left += [os.path.join(r, f) for f in fs]
print(json.dumps(dict(before=before, killed=killed, after=after, me=os.getpid(), left=left)))
'''


def test_nothing_a_worker_started_or_wrote_survives_it(tmp_path):
    """What the evaluator does after every worker, in a real evaluation sandbox: a setsid daemon
    is killed (only the sandbox's init and the server stay) and the writable folders are emptied,
    so nothing meets the next scoring."""
    import json
    import subprocess
    import sys

    from trainer.evaluator import ROOT
    from trainer.sandbox import SandboxSpec, wrap

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    spec = SandboxSpec(scratch=scratch, env={"PATH": "/usr/bin:/bin", "HOME": str(scratch)}, memory_mb=2048,
                       max_procs=64)
    argv = wrap([sys.executable, "-I", "-c", SWEEP.format(root=ROOT)], spec)
    p = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["killed"] >= 1 and len(out["before"]) >= 3
    assert out["after"] == sorted({1, out["me"]}), out
    assert out["left"] == [] and list(scratch.iterdir()) == []
