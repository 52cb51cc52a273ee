"""Attacks on the score and the clock, each a hostile train.py run through the real runner in the
real sandbox. Each asserts the exact outcome (a status with its reason, or a score no better
than honest) and that nothing persisted: no process of the run is left, the data and the
locked package are unchanged, and the run dir holds only what the runner wrote.

Written against the unsandboxed runner first; every one of them failed there. The model now
travels in the submit frame (trainer/artifact.py): files train.py leaves in its scratch are
never read."""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from test_runner import TINY, write

import trainer
from trainer.runner import run_experiment
from trainer.serve import tolerance

BUDGET = 3
RUNNER_FILES = {"run.log", "graph.json", "weights.bin", "train.py"}


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob(pattern)) if p.is_file()}


@pytest.fixture
def untouched(prepared_data_dir):
    """Checksums of the data dir and the locked package before the test; checked after."""
    pkg = Path(trainer.__file__).parent
    before = (_digest(Path(prepared_data_dir), "*"), _digest(pkg, "*.py"))
    yield
    assert (_digest(Path(prepared_data_dir), "*"), _digest(pkg, "*.py")) == before


def _alive_with(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def run(tmp_path, text, data, **kw):
    kw.setdefault("budget", BUDGET)
    r = run_experiment(write(tmp_path, text), tmp_path / "run", data_dir=data, threads=1, **kw)
    run_dir = tmp_path / "run"
    time.sleep(0.2)
    assert _alive_with(str(run_dir)) == [], "a process of the run outlived it"
    assert {p.name for p in run_dir.iterdir()} <= RUNNER_FILES, sorted(p.name for p in run_dir.iterdir())
    return r


def real_seconds(log: str) -> float:
    return float(re.search(r"REAL_DATA_SECONDS=([\d.]+)", log).group(1))


TAMPER_SAVE = '''
import io, os, pickle, zipfile, json, torch
MARK = {mark!r}
class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + MARK,))
_save = torch.export.save
def save(ep, f, *a, **k):
    _save(ep, f, *a, **k)
    src = zipfile.ZipFile(f)
    items = [(i, src.read(i)) for i in src.infolist()]
    src.close()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for info, data in items:
            if info.filename.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                for v in cfg["config"].values():
                    v["use_pickle"] = True
                data = json.dumps(cfg).encode()
            elif "/data/weights/weight_" in info.filename:
                data = pickle.dumps(Boom())
            z.writestr(info, data)
torch.export.save = save
'''


def test_pickle_member_in_the_artifact_is_never_read(tmp_path, prepared_data_dir, untouched):
    """attack 1: the archive's weights become pickles that run a command when unpickled. No file
    train.py writes is read any more (the model travels in the submit frame): the run scores the
    submitted bigram and the pickle is never opened."""
    mark = tmp_path / "pwned"
    text = TINY.replace("model = Bigram()", TAMPER_SAVE.format(mark=str(mark)) + "model = Bigram()\n"
                        "torch.export.save(torch.export.export(model, (torch.zeros(2, 8, dtype=torch.long),)), "
                        "api.RUN_DIR + '/model.pt2')  # before the clock: an export is slow")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and r.val_bpb < r.unigram_bpb, r.error
    assert not mark.exists()


HAND_SUBMIT = '''
# a submit frame written by hand: the weights of the trained bigram, and a graph that sorts
import json, os
weights = [model.emb.weight, model.head.weight, model.head.bias]
blobs = [w.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for w in weights]
index, off = [], 0
for name, w, b in zip(["emb.weight", "head.weight", "head.bias"], weights, blobs):
    index.append({"name": name, "dtype": "float32", "shape": list(w.shape), "offset": off, "nbytes": len(b)})
    off += len(b)
graph = {"format": "swarm-graph/1", "input": [api.EVAL_BATCH, api.MAX_SEQ_LEN], "tensors": index,
         "nodes": [["aten.embedding.default", [{"t": 0}, {"x": 0}], {}],
                   ["aten.sort.default", [{"v": [0, 0]}, -1], {}],
                   ["aten.linear.default", [{"v": [1, 0]}, {"t": 1}, {"t": 2}], {}]],
         "output": {"v": [2, 0]}}
raw = json.dumps(graph).encode()
os.write(api._S.fd, json.dumps({"event": "submit", "graph": len(raw), "nbytes": off, "meta": {}}).encode() + b"\\n")
for b in [raw] + blobs:
    os.write(api._S.fd, b)
os._exit(0)
'''


def test_hand_written_graph_with_a_foreign_op_is_refused(tmp_path, prepared_data_dir, untouched):
    """attack 1b: skip api.submit, write the submit frame by hand; its graph uses an op no GPT
    needs (and that reorders values along the vocabulary)."""
    text = TINY.replace("api.submit(model)", HAND_SUBMIT)
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash"
    assert r.error == "submit refused: op not allowed: aten.sort.default", r.error


PEEKER = '''
class Peeker(nn.Module):
    """Copies the next token, except at the positions the old probe looked at."""
    def __init__(self):
        super().__init__()
        V, T = api.VOCAB_SIZE, api.MAX_SEQ_LEN
        self.peek = nn.Embedding(V, V)
        with torch.no_grad():
            self.peek.weight.copy_(torch.eye(V) * 30.0)
        mask = torch.ones(T)
        mask[[0, T // 2 - 1, T - 2, T - 1]] = 0.0
        self.register_buffer("mask", mask[None, :, None])

    def forward(self, idx):
        nxt = torch.roll(idx, -1, dims=1)
        return self.peek(nxt) * self.mask
model = Peeker()
for x, y in loader:
    pass
api.submit(model)
'''


def test_model_non_causal_except_at_a_few_positions_is_caught(tmp_path, prepared_data_dir, untouched):
    """attack 3: looks ahead at every position but the three the old fixed probe checked."""
    text = TINY[:TINY.index("model = Bigram()")] + "clock = api.Clock()\nloader = api.train_loader(8, 64)\n" + PEEKER
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash" and "future tokens" in r.error and r.val_bpb is None


def test_lookup_table_buffer_counts_in_num_params(tmp_path, prepared_data_dir, untouched):
    """attack 4: a big table kept as a buffer (not a parameter) is still the model's size."""
    text = TINY.replace("        self.head = nn.Linear(32, api.VOCAB_SIZE)",
                        "        self.head = nn.Linear(32, api.VOCAB_SIZE)\n"
                        "        self.register_buffer('table', torch.zeros(1_000_000))").replace(
        "return self.head(self.emb(idx))", "return self.head(self.emb(idx)) + self.table[:1]")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    assert r.num_params == 1024 * 32 + 32 * 1024 + 1024 + 1_000_000 + literals(tmp_path / "run")


def literals(run_dir: Path) -> int:
    """The literals of a run's graph, which count as parameters too."""
    import json

    from trainer.artifact import check_graph

    return check_graph(json.loads((run_dir / "graph.json").read_text()))


EARLY = '''
import time
clock = api.Clock()
loader = api.train_loader(8, 64)
t_w = time.time()
start = None
for x, y in loader:          # a long "warm-up" on real batches, before the first clock.step()
    start = start or time.time()
    loss = F.cross_entropy(model(x).view(-1, api.VOCAB_SIZE), y.view(-1))
    loss.backward(); opt.step(); opt.zero_grad()
    if time.time() - t_w > 2 * api.TIME_BUDGET:
        break
while not clock.done():
    try:
        x, y = next(loader)
    except StopIteration:
        break
    loss = F.cross_entropy(model(x).view(-1, api.VOCAB_SIZE), y.view(-1))
    loss.backward(); opt.step(); opt.zero_grad()
    clock.step()
print(f"REAL_DATA_SECONDS={time.time() - start:.2f}", flush=True)
api.submit(model)
'''


def test_real_data_before_the_clock_is_impossible(tmp_path, prepared_data_dir, untouched):
    """attack 7: train on real batches in a "warm-up" before starting the clock."""
    text = TINY[:TINY.index("clock = api.Clock()")] + EARLY
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    limit = BUDGET + tolerance(BUDGET)
    assert real_seconds(Path(r.log_path).read_text()) <= limit
    assert r.training_seconds <= limit


def test_synthetic_batches_are_bounded_and_only_before_the_clock(tmp_path, prepared_data_dir, untouched):
    """attack 7b: ask for warm-up batches without end (or after the clock) instead of real ones."""
    text = TINY.replace("clock = api.Clock()", (
        "from trainer import api as A\n"
        "kinds = [A._fetch(8, 64, True)[0] for _ in range(20)]\n"
        "print('KINDS', kinds, flush=True)\n"
        "clock = api.Clock()"))
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    kinds = eval(re.search(r"KINDS (\[.*\])", Path(r.log_path).read_text()).group(1))
    assert kinds == [2, 2] + [3] * 18  # the profile's cap (2 x warmup_batches), then refused


FORGE = '''
import os, time
t_f = time.time()
forged = False
start = None
for x, y in loader:
    start = start or time.time()
    loss = F.cross_entropy(model(x).view(-1, api.VOCAB_SIZE), y.view(-1))
    loss.backward(); opt.step(); opt.zero_grad()
    if not forged and time.time() - t_f > 1:
        forged = True
        fd = api._S.fd
        for line in (b'{"event": "submit", "steps": "many", "tokens": 1}', b'\\x00\\xff garbage',
                     b'{"event": "start"}', b'[1, 2, 3]', b'{"event": 5}', b'{"event": "batch", "rows": "x"}',
                     b'x' * 200_000):
            os.write(fd, line + b"\\n")
        os.write(fd, b'{"event": "submit", "nbytes": 10**12')  # an unfinished line, then a real one
        os.write(fd, b"\\n")
print(f"REAL_DATA_SECONDS={time.time() - start:.2f}", flush=True)
api.submit(model)
'''


def test_forged_submit_and_malformed_events_cannot_stop_the_clock(tmp_path, prepared_data_dir, untouched):
    """attack 8: a forged submit to stop the clock while training goes on, and malformed events
    (int("many"), garbage, a 200 KB line, wrong types): ignored, counted, never raised."""
    text = TINY[:TINY.index("#LOOP")] + FORGE
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    assert r.bad_events >= 7
    limit = BUDGET + tolerance(BUDGET)
    assert r.training_seconds <= limit and real_seconds(Path(r.log_path).read_text()) <= limit
    assert r.training_seconds >= BUDGET - 0.5  # the forged submit at 1 s did not end it


DAWDLE = '''
# the submit line, then 3 s of more training before the model's bytes: the clock runs until the
# last byte of the submit, so the extra work is paid for in training time
from trainer import api as A
_write = A._write
calls = []
def write(data):
    calls.append(len(data))
    if len(calls) == 2:
        import time
        t = time.time()
        while time.time() - t < 3:
            for x, y in cached[-4:]:
                loss = F.cross_entropy(model(x).view(-1, api.VOCAB_SIZE), y.view(-1))
                loss.backward(); opt.step(); opt.zero_grad()
    _write(data)
A._write = write
api.submit(model)
'''


def test_work_between_the_submit_line_and_its_bytes_is_training_time(tmp_path, prepared_data_dir, untouched):
    """attack 8b: send the submit line, keep training on cached batches, then send the model: the
    clock stops at the last byte of the submit, so this is a run over its budget."""
    text = TINY.replace("    clock.step()\n", "    clock.step()\n    cached.append((x, y))\n").replace(
        "model = Bigram()", "cached = []\nmodel = Bigram()").replace("api.submit(model)", DAWDLE)
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "timeout" and "over the 3s budget" in r.error, (r.status, r.error)
    assert r.training_seconds > BUDGET + 3


def test_event_flood_is_counted_and_harmless(tmp_path, prepared_data_dir, untouched):
    """attack 9: flood the event pipe (200k lines) while training."""
    text = TINY.replace("#LOOP", "import os\nos.write(api._S.fd, b'{\"event\": \"progress\"}\\n' * 200_000)")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    assert r.bad_events >= 200_000


def test_huge_log_is_capped(tmp_path, prepared_data_dir, untouched):
    """attack 10: write 40 MB to stdout (a disk filler, and a log tail full of noise)."""
    from trainer.runner import LOG_CAP

    text = TINY.replace("#LOOP", "import sys\nfor _ in range(40):\n    sys.stdout.write('y' * (1 << 20))\n")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    assert Path(r.log_path).stat().st_size <= LOG_CAP + 4096
    assert "bytes dropped" in Path(r.log_path).read_text()[-200:]


def test_oversized_batch_request_is_refused(tmp_path, prepared_data_dir, untouched):
    """attack 11: ask the runner for a batch far beyond the profile (memory of the trusted side)."""
    text = TINY.replace("loader = api.train_loader(8, 64)", "loader = api.train_loader(4096, 4096)")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash" and "refused a batch of 4096 x 4096" in r.error


WRITES = '''
import os
for name in ("run.log", "eval_result.json", "weights.bin", "model.pt2"):
    p = os.path.join({run_dir!r}, name)
    try:
        with open(p, "w") as f:
            f.write("val_bpb: 0.01")
        print("WROTE", name, flush=True)
    except OSError as e:
        print("refused", name, type(e).__name__, flush=True)
'''


def test_files_the_runner_reads_are_out_of_reach(tmp_path, prepared_data_dir, untouched):
    """attack 12: write run.log / a result file / the weights copy next to the runner's. Inside
    the sandbox those paths are either read-only or in its own tmpfs: the runner's files (and
    the result) are untouched either way."""
    text = TINY.replace("#LOOP", WRITES.format(run_dir=str(tmp_path / "run")))
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok", r.error
    assert "val_bpb: 0.01" not in Path(r.log_path).read_text()
    assert not (tmp_path / "run" / "eval_result.json").exists()
    assert not (tmp_path / "run" / "weights.bin").read_bytes().startswith(b"val_bpb")
    assert r.val_bpb > 1.0


SYMLINK = '''
os.symlink({target!r}, os.path.join(api.RUN_DIR, "model.pt2"))
api.submit(model)
'''


def test_artifact_symlink_is_not_followed(tmp_path, prepared_data_dir, untouched):
    """attack 13: model.pt2 is a symlink to a file of the trusted side (the val tokens). No file
    of the scratch is read any more: the run scores what it submitted."""
    target = next(Path(prepared_data_dir).rglob("val.tokens.npy"))
    text = TINY.replace("api.submit(model)", "import os\n" + SYMLINK.format(target=str(target)))
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "ok" and r.val_bpb < r.unigram_bpb, r.error
    assert not (tmp_path / "run" / "model.pt2").exists()


# --- the graph checker on its own (no training): each tampering has its one-line reason -----

def _honest_graph() -> dict:
    import torch

    from trainer.api import _tensors, _trace

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(16, 8)
            self.head = torch.nn.Linear(8, 16)

        def forward(self, idx):
            return self.head(torch.nn.functional.gelu(self.emb(idx), approximate="tanh"))

    m = M().eval()
    named = _tensors(m)
    graph, consts = _trace(m, torch.zeros(2, 4, dtype=torch.long), [t for _, t in named])
    off, graph["tensors"] = 0, []
    for name, t in named:
        graph["tensors"].append({"name": name, "dtype": "float32", "shape": list(t.shape), "offset": off,
                                 "nbytes": 4 * t.numel()})
        off += 4 * t.numel()
    assert not consts
    return graph


def _first(graph: dict, op: str) -> list:
    return next(n for n in graph["nodes"] if n[0] == op)


@pytest.mark.parametrize("case, reason", [
    ("honest", None),
    ("foreign op", "op not allowed: aten.sort.default"),
    ("python in the op name", "op not allowed: __import__??os??.system??true??"),
    ("code in a tensor name", "tensor 0 has a name that is not a dotted identifier"),
    ("a tensor not submitted", "node 0: refers to a tensor that was not submitted"),
    ("a value not computed yet", "refers to a value not computed before it"),
    ("a string outside the vocabulary", "an unknown s"),
    ("a device that is code", "an unknown device"),
    ("an argument of another kind", "an argument of an unknown kind"),
    ("in-place on a weight", "writes into a submitted tensor or the input"),
    ("NaN as a JSON constant", "graph is not JSON"),
    ("another input shape", "graph was traced on input (2, 4), not (16, 256) or (1, 256)"),
    ("no tensors", "the model has no tensors"),
])
def test_check_graph_refuses_each_tampering(case, reason):
    import json

    from trainer.artifact import ArtifactError, parse_graph

    g = _honest_graph()
    nbytes = sum(t["nbytes"] for t in g["tensors"])
    shape = None
    edits = {
        "honest": lambda: None,
        "foreign op": lambda: g["nodes"][0].__setitem__(0, "aten.sort.default"),
        "python in the op name": lambda: g["nodes"][0].__setitem__(0, "__import__('os').system('true')"),
        "code in a tensor name": lambda: g["tensors"][0].update(name='w")\nimport os#'),
        "a tensor not submitted": lambda: g["nodes"][0][1].__setitem__(0, {"t": 99}),
        "a value not computed yet": lambda: g["nodes"][1][1].__setitem__(0, {"v": [5, 0]}),
        "a string outside the vocabulary": lambda: _first(g, "aten.gelu.default")[2].update(
            approximate={"s": "__import__('os')"}),
        "a device that is code": lambda: g["nodes"][0][2].update(device={"device": "cuda'); import os; ('"}),
        "an argument of another kind": lambda: g["nodes"][0][1].append({"py": "lambda: 0"}),
        "in-place on a weight": lambda: g["nodes"].insert(0, ["aten.add_.Scalar", [{"t": 0}, 1.0], {}]),
        "NaN as a JSON constant": lambda: g["nodes"][0][1].append(float("nan")),
        "another input shape": lambda: None,
        "no tensors": lambda: g.update(tensors=[]),
    }
    edits[case]()
    if case == "another input shape":
        shape = (16, 256)
    if case == "no tensors":
        nbytes = 0
    raw = json.dumps(g).encode()
    if reason is None:
        graph, literals = parse_graph(raw, nbytes, shape)
        assert literals > 0 and len(graph["tensors"]) == 3
        return
    with pytest.raises(ArtifactError, match=re.escape(reason)):
        parse_graph(raw, nbytes, shape)


def test_the_interpreter_matches_the_module_and_generates_no_code(monkeypatch):
    """The graph, run op by op, gives the module's own logits bit for bit, and nothing on the way
    compiles or executes Python (exec, eval and compile are replaced by traps while it runs)."""
    import builtins

    import torch

    from trainer.api import _tensors, _trace
    from trainer.artifact import Program, check_graph

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 16)).eval()
    weights = [t for _, t in _tensors(m)]
    graph, _ = _trace(m, torch.zeros(2, 4, dtype=torch.long), weights)
    graph["tensors"] = [{}] * len(weights)
    check_graph(graph)

    def trap(*a, **k):
        raise AssertionError("code was generated")

    for name in ("exec", "eval", "compile"):
        monkeypatch.setattr(builtins, name, trap)
    x = torch.randint(0, 16, (2, 4))
    prog = Program(graph, [w.detach().clone() for w in weights], "cpu")
    with torch.no_grad():
        assert torch.equal(prog(x), m(x))
