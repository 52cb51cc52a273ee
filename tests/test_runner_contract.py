"""The runner's contract with its caller, checked on the REAL runner and on the fake that agent
tests use, through the same assertions: event names, order and fields; result fields. Plus
the one thing the events are for: a restarted agent can kill a live run's sandbox with the
process group the `started` event gave it."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from test_runner import TINY, write

from agents.inflight import Inflight, _belongs_to_run, _group_members, kill_leftover
from tests.fake_runner import fake_run_experiment
from trainer.events import EVENT_ORDER, parse_event
from trainer.runner import run_experiment, score_kept
from trainer.schema import ExperimentResult

OK_FIELDS = ("val_bpb", "training_seconds", "startup_seconds", "eval_seconds", "steps", "tokens",
             "num_params", "peak_memory_mb", "unigram_bpb", "log_path", "hardware_class", "profile")
FAKE_TRAIN_PY = "LEARNING_RATE = 0.02\nDEPTH = 6\n"


def alive(pgid: int) -> list[int]:
    """Members of a process group that are not zombies (a killed supervisor's children are
    reparented to this container's init, which may be slow to reap them)."""
    out = []
    for pid in _group_members(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            out.append(pid)
    return out


class Recorder:
    """on_event that also checks, at the `started` event, that the group it names is alive and
    is recognisably this run's (what kill_leftover will check)."""

    def __init__(self):
        self.events: list[dict] = []
        self.group_ok: bool | None = None

    def __call__(self, event: dict) -> None:
        self.events.append(dict(event))
        if event.get("event") == "started":
            members = _group_members(event["pgid"])
            self.group_ok = bool(members) and any(_belongs_to_run(p, event["run_dir"]) for p in members)


def check_contract(events: list[dict], result: ExperimentResult, run_dir: Path) -> None:
    parsed = [parse_event(e) for e in events]                # every event validates
    for raw, ev in zip(events, parsed):
        assert set(raw) == set(type(ev).model_fields), raw   # every field, nothing else
    names = [e.event for e in parsed]
    assert names[0] == "started" and names.count("started") == 1
    assert [EVENT_ORDER.index(n) for n in names] == sorted(EVENT_ORDER.index(n) for n in names)
    assert parsed[0].run_dir == str(run_dir.resolve()) and parsed[0].pgid > 1
    progress = [e.progress for e in parsed if e.event == "progress"]
    assert progress == sorted(progress)
    assert names.count("evaluating") <= 1
    assert isinstance(result, ExperimentResult)
    if result.status == "ok":
        missing = [f for f in OK_FIELDS if getattr(result, f) is None]
        assert not missing, missing
        assert names.count("progress") >= 1 and names.count("evaluating") == 1
    else:
        assert result.error and "\n" not in result.error and result.log_tail


def test_real_runner_keeps_the_contract(tmp_path, prepared_data_dir):
    rec = Recorder()
    r = run_experiment(write(tmp_path, TINY), tmp_path / "run", budget=2, data_dir=prepared_data_dir,
                       on_event=rec, threads=1)
    assert r.status == "ok", r.error
    check_contract(rec.events, r, tmp_path / "run")
    assert rec.group_ok is True
    assert r.bad_events == 0 and r.sandboxed
    assert alive(rec.events[0]["pgid"]) == []                # nothing of the run is left
    # confirm only when asked, later, from the kept artifact: the same weights score the same
    val, confirm, err = score_kept(tmp_path / "run", data_dir=prepared_data_dir, threads=1)
    assert err is None and abs(val - r.val_bpb) < 1e-6 and confirm is not None and r.confirm_bpb is None


def test_real_runner_crash_keeps_the_contract(tmp_path, prepared_data_dir):
    rec = Recorder()
    r = run_experiment(write(tmp_path, TINY.replace("def forward(self, idx):", "def forward(self, idx)")),
                       tmp_path / "run", budget=2, data_dir=prepared_data_dir, on_event=rec, threads=1)
    assert r.status == "crash"
    check_contract(rec.events, r, tmp_path / "run")


def test_fake_runner_keeps_the_same_contract(tmp_path):
    for name, text in (("ok", FAKE_TRAIN_PY), ("crash", FAKE_TRAIN_PY + "CRASH = True\n")):
        rec = Recorder()
        run_dir = tmp_path / name
        r = fake_run_experiment(sleep=0.3)(write(tmp_path, text, f"{name}.py"), run_dir, budget=1,
                                           on_event=rec)
        assert r.status == name
        check_contract(rec.events, r, run_dir)
        assert rec.group_ok is True


def test_a_restarted_agent_kills_a_live_run_by_its_started_pgid(tmp_path, prepared_data_dir):
    """What agents/inflight.py does after a death, against a real sandbox: the pgid from the
    `started` event, written to inflight.json by the agent's _on_event, ends the whole run."""
    from agents.agent import ResearchAgent
    from agents.messages import StartedExperiment

    class Stub:
        cfg = type("C", (), {"name": "a1"})()
        progress = 0.0

        def _beat(self):
            pass

    stub = Stub()
    stub.inflight = Inflight(tmp_path / "state")
    run_dir = tmp_path / "run"
    stub.inflight.write(StartedExperiment(experiment_id="e1", agent="a1", program="p", hardware_class="hw",
                                          parent="0" * 40, commit="0" * 40), run_dir)
    slow = TINY.replace("    clock.step()", "    clock.step()\n    import time; time.sleep(0.05)")
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", run_experiment(
        write(tmp_path, slow), run_dir, budget=60, data_dir=prepared_data_dir, threads=1,
        on_event=lambda e: ResearchAgent._on_event(stub, e))))
    t.start()
    deadline = time.monotonic() + 120
    while (stub.inflight.read() or {}).get("pgid") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    data = stub.inflight.read()
    assert data["pgid"] and data["run_dir"] == str(run_dir.resolve())
    while stub.progress == 0.0 and time.monotonic() < deadline:   # training is under way
        time.sleep(0.1)
    assert kill_leftover(data["pgid"], data["run_dir"]) is True
    t.join(timeout=60)
    assert out["r"].status == "crash"
    assert alive(data["pgid"]) == []


@pytest.mark.gpu
def test_train_py_sees_exactly_its_assigned_gpu(tmp_path, prepared_data_dir):
    """On a GPU node: the sandbox shows train.py one device node and one CUDA device, the one
    the agent was given (here the last GPU of the machine), and the run trains on it."""
    import torch

    gpu = torch.cuda.device_count() - 1
    probe = TINY.replace("model = Bigram()", (
        "import glob, os\n"
        "print('NODES', sorted(glob.glob('/dev/nvidia[0-9]*')), 'COUNT', torch.cuda.device_count(),\n"
        "      'VISIBLE', os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True)\n"
        "model = Bigram().to(api.DEVICE)"))
    r = run_experiment(write(tmp_path, probe), tmp_path / "run", budget=5, data_dir=prepared_data_dir,
                       profile="cpu", device="cuda:0", cuda_visible_devices=str(gpu))
    log = Path(r.log_path).read_text()
    assert f"NODES ['/dev/nvidia{gpu}'] COUNT 1 VISIBLE {gpu}" in log, log[-2000:]
    assert r.status == "ok", r.error
