"""Attacks on the score and the clock, each a hostile train.py run through the real runner in the
real sandbox. Each asserts the exact outcome (a status with its reason, or a score no better
than honest) and that nothing persisted: no process of the run is left, the data and the
locked package are unchanged, and the run dir holds only what the runner wrote.

Written against the unsandboxed runner first; every one of them failed there."""
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
RUNNER_FILES = {"run.log", "model.pt2", "weights.bin", "weights.json", "train.py"}


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


def test_pickle_member_in_the_artifact_is_refused(tmp_path, prepared_data_dir, untouched):
    """attack 1: the archive's weights become pickles that run a command when unpickled."""
    mark = tmp_path / "pwned"
    text = TINY.replace("model = Bigram()", TAMPER_SAVE.format(mark=str(mark)) + "model = Bigram()")
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash" and r.error.startswith("artifact refused:") and "pickle" in r.error
    assert not mark.exists()


HAND_EXPORT = '''
class Sorter(nn.Module):
    def forward(self, idx):
        e = model.emb(idx)
        return model.head(e.sort(dim=-1).values)
import json, os
ep = torch.export.export(Sorter(), (torch.zeros((api.EVAL_BATCH, api.MAX_SEQ_LEN), dtype=torch.long),))
torch.export.save(ep, os.path.join(api.RUN_DIR, "model.pt2"))
'''
HAND_SUBMIT = '''
# a submit frame written by hand: the runner gets the weights, the graph is the file above
blobs, index, off = [], [], 0
for name, t in list(model.named_parameters()):
    b = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    index.append({"name": name, "dtype": "float32", "shape": list(t.shape), "offset": off, "nbytes": len(b)})
    blobs.append(b); off += len(b)
os.write(api._S.fd, json.dumps({"event": "submit", "nbytes": off, "tensors": index, "meta": {},
                                "steps": 1, "tokens": 1}).encode() + b"\\n")
for b in blobs:
    os.write(api._S.fd, b)
os._exit(0)
'''


def test_hand_written_artifact_with_a_foreign_op_is_refused(tmp_path, prepared_data_dir, untouched):
    """attack 1b: skip api.submit, write model.pt2 by hand; its graph uses an op no GPT needs."""
    text = TINY.replace("#LOOP", HAND_EXPORT).replace("api.submit(model)", HAND_SUBMIT)
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash"
    assert r.error == "artifact refused: op not allowed: torch.ops.aten.sort.default", r.error


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
    assert r.num_params == 1024 * 32 + 32 * 1024 + 1024 + 1_000_000


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


def test_weights_are_fixed_at_submit(tmp_path, prepared_data_dir, untouched):
    """attack 8b: keep training during the export (after the weights were sent): the scored model
    is the one submitted, so the extra work changes nothing."""
    hook = TINY.replace("api.submit(model)", (
        "import torch\n"
        "_export = torch.export.export\n"
        "def export(m, *a, **k):\n"
        "    with torch.no_grad():\n"
        "        m.head.bias.fill_(-1e4)\n"       # sabotage: if these weights were scored, val_bpb explodes
        "        m.head.bias[0] = 0.0\n"
        "    return _export(m, *a, **k)\n"
        "torch.export.export = export\n"
        "api.submit(model)"))
    r = run(tmp_path, hook, prepared_data_dir)
    assert r.status == "ok", r.error
    assert r.val_bpb < r.unigram_bpb  # the bigram as submitted, not the sabotaged export


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
_save = torch.export.save
def save(ep, f, *a, **k):
    _save(ep, f, *a, **k)
    os.remove(f)
    os.symlink({target!r}, f)
torch.export.save = save
api.submit(model)
'''


def test_artifact_symlink_is_not_followed(tmp_path, prepared_data_dir, untouched):
    """attack 13: model.pt2 is a symlink to a file of the trusted side (the val tokens)."""
    target = next(Path(prepared_data_dir).rglob("val.tokens.npy"))
    text = TINY.replace("api.submit(model)", "import os\n" + SYMLINK.format(target=str(target)))
    r = run(tmp_path, text, prepared_data_dir)
    assert r.status == "crash" and "model.pt2 not a regular file" in r.error, r.error
    assert not (tmp_path / "run" / "model.pt2").exists()


# --- the artifact checker on its own (no training): each tampering has its one-line reason ---

def _honest_archive(path: Path) -> Path:
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(16, 8)
            self.head = torch.nn.Linear(8, 16)

        def forward(self, idx):
            return self.head(self.emb(idx))

    with torch.no_grad():
        ep = torch.export.export(M().eval(), (torch.zeros(2, 4, dtype=torch.long),))
    torch.export.save(ep, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    import zipfile

    with zipfile.ZipFile(src) as z:
        items = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for info, data in items:
            name, data = edit(info.filename, data)
            if name is not None:
                info.filename = name
                z.writestr(info, data)
    return dst


def _json_edit(suffix: str, change):
    import json

    def edit(name, data):
        if name.endswith(suffix):
            obj = json.loads(data)
            change(obj)
            data = json.dumps(obj).encode()
        return name, data
    return edit


@pytest.mark.parametrize("case, reason", [
    ("honest", None),
    ("pickle weight", "is a pickle"),
    ("extra member", "unexpected archive member"),
    ("sympy expression", "graph uses expr"),
    ("guards code", "guards code"),
    ("foreign op", "op not allowed: torch.ops.aten.sort.default"),
    ("state mutation", "must not mutate state"),
    ("node name", "without an identifier name"),
])
def test_check_archive_refuses_each_tampering(tmp_path, case, reason):
    from trainer.artifact import ArtifactError, check_archive

    src = _honest_archive(tmp_path / "m.pt2")
    node0 = lambda o: o["graph_module"]["graph"]["nodes"][0]  # noqa: E731
    edits = {
        "honest": lambda n, d: (n, d),
        "pickle weight": _json_edit("model_weights_config.json",
                                    lambda o: next(iter(o["config"].values())).update(use_pickle=True)),
        "extra member": lambda n, d: (n.replace("archive_version", "extra/payload.pkl"), d)
        if n.endswith("archive_version") else (n, d),
        "sympy expression": _json_edit("models/model.json", lambda o: o["graph_module"]["graph"]["tensor_values"][
            "idx"]["sizes"].__setitem__(0, {"as_expr": {"expr_str": "__import__('os').system('true')"}})),
        "guards code": _json_edit("models/model.json", lambda o: o.update(guards_code=["import os"])),
        "foreign op": _json_edit("models/model.json", lambda o: node0(o).update(target="torch.ops.aten.sort.default")),
        "state mutation": _json_edit("models/model.json", lambda o: o["graph_module"]["signature"][
            "output_specs"].append({"buffer_mutation": {"arg": {"name": "x"}, "buffer_name": "b"}})),
        "node name": _json_edit("models/model.json", lambda o: node0(o).update(name="x\nimport os")),
    }
    path = _rewrite(src, tmp_path / "t.pt2", edits[case])
    if reason is None:
        check_archive(path)
        return
    with pytest.raises(ArtifactError, match=re.escape(reason)):
        check_archive(path)
