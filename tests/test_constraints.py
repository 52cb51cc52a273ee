"""Search-space constraints (a program's `constraints:`): the offline backends never propose a point
the program rules out. The shipped architecture program on the shipped train.py: mutate and optuna
(a real redis study) used to write MODEL_DIM values HEAD_DIM does not divide, a run spent on a
reshape crash (the README's quick start showed one). Bad constraints are one-line errors that
`swarm run` gives before it creates anything; hostile values never reach `eval`."""
from __future__ import annotations

import importlib.resources
import itertools
import re
from types import SimpleNamespace

import pytest
import redis

from agents.backends import optuna_study as S
from agents.backends.base import ProposalContext
from agents.backends.mutate import MutateBackend, branch_values, find_constants
from agents.backends.optuna import OptunaBackend, OptunaSpec
from agents.constraints import ConstraintError, parse_constraint
from agents.errors import ProgramError
from agents.messages import ExperimentRecord
from agents.program import load_program, parse_program
from coordinator.run.config import shipped_programs_dir

LIMITS = dict(max_edit_bytes=20_000, max_file_bytes=200_000)
BASE = (importlib.resources.files("trainer") / "baseline" / "train.py").read_text()
ARCH = load_program(shipped_programs_dir() / "architecture.md")
GPU, CPU = "gpu-test-h100", "cpu-test-2t"
_IDS = itertools.count()


def unconstrained(program):
    """The same program with its constraints dropped (what the backends saw before)."""
    text = re.sub(r"constraints:(\n  - .*| \[.*\])\n(  - .*\n)*", "", program.text)
    p = parse_program(text, program.name)
    assert p.search_space == program.search_space and not p.constraints
    return p


def divides(values: dict) -> bool:
    return values["MODEL_DIM"] % values["HEAD_DIM"] == 0


# --- the expressions -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,msg", [
    ("MODEL_DIM ** 2 < 10", "Pow is not allowed"),
    ("__import__('os').system('true')", "Call is not allowed"),
    ("MODEL_DIM.real > 0", "Attribute is not allowed"),
    ("[1, 2][0] == DEPTH", "Subscript is not allowed"),
    ("model_dim > 0", "model_dim is not an UPPER_CASE constant"),
    ("1 < 2", "names no constant"),
    ("DEPTH >", "not a Python expression"),
    (3, "is not an expression"),
])
def test_a_constraint_that_is_not_allowed_is_a_one_line_error_naming_it(text, msg):
    with pytest.raises(ConstraintError, match=re.escape(msg)) as e:
        parse_constraint(text)
    assert "\n" not in str(e.value)


def test_values_from_a_hostile_train_py_break_a_constraint_or_skip_it_never_raise():
    c = parse_constraint("MODEL_DIM % HEAD_DIM == 0 and WINDOW_PATTERN in ['L', 'SSSL']")
    assert c.holds({"MODEL_DIM": 512, "HEAD_DIM": 128, "WINDOW_PATTERN": "L"})
    assert not c.holds({"MODEL_DIM": 448, "HEAD_DIM": 128, "WINDOW_PATTERN": "L"})
    assert not c.holds({"MODEL_DIM": 512, "HEAD_DIM": 0, "WINDOW_PATTERN": "L"})       # 1 % 0
    assert not c.holds({"MODEL_DIM": "512", "HEAD_DIM": 128, "WINDOW_PATTERN": "L"})   # str % int
    assert not c.holds({"MODEL_DIM": True, "HEAD_DIM": 1, "WINDOW_PATTERN": "L"})      # bool is no number
    assert c.holds({"MODEL_DIM": 448, "WINDOW_PATTERN": "L"})   # no HEAD_DIM in train.py: nothing to check
    chain = parse_constraint("2 <= DEPTH <= 12")
    assert chain.holds({"DEPTH": 2}) and not chain.holds({"DEPTH": 13})


def test_program_errors_name_the_file_and_swarm_run_refuses_before_creating_anything(tmp_path):
    from coordinator.run.swarm import plan

    text = ARCH.text.replace("MODEL_DIM % HEAD_DIM == 0", "MODEL_DIM % head_dim == 0")
    (tmp_path / "arch.md").write_text(text)
    (tmp_path / "swarm.yaml").write_text("programs: [{path: arch.md}]\n")
    args = SimpleNamespace(config=str(tmp_path / "swarm.yaml"), budget=None, seed=None, profile="cpu",
                           gpus=None, address=None, agents=1, redis_url=None, hours=None,
                           swarm_home=str(tmp_path / "h"), max_experiments=1, plain=True, verbose=False)
    with pytest.raises(ProgramError, match=r"arch.md: constraints: 'MODEL_DIM % head_dim == 0': "
                                           r"head_dim is not an UPPER_CASE constant") as e:
        plan(args)
    assert "\n" not in str(e.value) and not (tmp_path / "h").exists()
    with pytest.raises(ProgramError, match=r"x: constraints: expected a list"):
        parse_program("```yaml\nconstraints: DEPTH > 2\n```\n", "x", "x")
    with pytest.raises(ProgramError, match=r"unknown key 'constraint' \(expected search_space, constraints"):
        parse_program("```yaml\nconstraint: [DEPTH > 2]\n```\n", "x", "x")


# --- mutate -----------------------------------------------------------------------------------

def mutate_points(program, n=300):
    """The (CUDA, CPU) values of MODEL_DIM and HEAD_DIM in n proposals of mutate, a walk from the
    shipped train.py (both branches of its device switches move)."""
    b = MutateBackend(seed=3)
    out, src = [], BASE
    for _ in range(n):
        p = b.propose(ProposalContext(program=program, source=src, base_commit="b" * 40, agent="a"))
        assert p.error is None, p.error
        src, _ = p.resolve(src, **LIMITS)    # a walk, as an agent whose every change is kept
        c = find_constants(src)
        out += branch_values({k: c[k].values for k in ("MODEL_DIM", "HEAD_DIM")}, {})
    return out


def test_mutate_never_proposes_a_point_the_constraints_rule_out_on_either_device():
    before = mutate_points(unconstrained(ARCH))
    assert sum(not divides(v) for v in before) >= 20          # what the test would catch
    after = mutate_points(ARCH)
    assert all(divides(v) for v in after), [v for v in after if not divides(v)][:3]
    # it still moves both: the constraint cuts points, not knobs
    assert len({v["MODEL_DIM"] for v in after}) >= 4 and len({v["HEAD_DIM"] for v in after}) >= 3


def test_a_constraint_on_a_constant_outside_the_space_is_read_from_train_py():
    # the shipped explore moves MODEL_DIM (64 + 192k) and leaves HEAD_DIM alone: 128 on CUDA divides half
    prog = load_program(shipped_programs_dir() / "explore.md")
    assert prog.constraint_names() == {"MODEL_DIM", "HEAD_DIM"} and "HEAD_DIM" not in prog.search_space
    assert sum(not divides(v) for v in mutate_points(unconstrained(prog), 150)) >= 10
    assert all(divides(v) for v in mutate_points(prog, 150))


# --- optuna, a real study -----------------------------------------------------------------------

def optuna_points(url, program, hw, start, n=40):
    spec = OptunaSpec.model_validate({"type": "optuna", "storage_wait_s": 20, "start": start,
                                      "n_startup_trials": 5})
    b = OptunaBackend(spec, seed=0, agent="a0", client=redis.Redis.from_url(url),
                      swarm_id=f"sw-{next(_IDS)}", hardware_class=hw)
    out = []
    for _ in range(n):
        p = b.propose(ProposalContext(program=program, source=BASE, base_commit="b" * 40, agent="a0"))
        assert p.error is None, p.error
        new, _ = p.resolve(BASE, **LIMITS)
        v = S.current_values(new, program, hw)
        out.append(v)
        rec = ExperimentRecord(experiment_id=f"e{next(_IDS)}", swarm_id="sw", kind="experiment", agent="a0",
                               program=program.name, hardware_class=hw, parent="b" * 40, commit="c" * 40,
                               description=p.description, status="ok",
                               # the wide heads pay: the sampler goes where half the widths crash
                               val_bpb=2.0 + abs(v["DEPTH"] - 6) * 0.01 + v["MODEL_DIM"] / 1e5
                               - 0.05 * (v.get("HEAD_DIM") == 128))
        b.observe(rec, new)
    return out


@pytest.mark.parametrize("start", ["best", "anywhere"])
def test_optuna_never_proposes_a_point_the_constraints_rule_out(redis_url, start):
    # on a GPU class HEAD_DIM is 128: MODEL_DIM 64, 192, 320 ... crash the trainer
    before = optuna_points(redis_url, unconstrained(ARCH), GPU, start)
    assert sum(not divides(v) for v in before) >= 3
    after = optuna_points(redis_url, ARCH, GPU, start)
    assert all(divides(v) for v in after), [v for v in after if not divides(v)][:3]
    # still moves both constants (around best, a step or two)
    assert len({v["MODEL_DIM"] for v in after}) >= 3 and len({v["HEAD_DIM"] for v in after}) >= 3


def test_optuna_reads_a_constant_outside_the_space_on_the_agents_hardware_class(redis_url):
    explore = load_program(shipped_programs_dir() / "explore.md")
    # explore's MODEL_DIM grid ends off its step, which optuna cannot express: the same points to 1216
    text = explore.text.replace("max: 1536, step: 192", "max: 1216, step: 192")
    prog = parse_program(text, "explore")
    S.check_space(prog)
    head = find_constants(BASE)["HEAD_DIM"].values[0]   # CUDA's 128
    before = optuna_points(redis_url, unconstrained(prog), GPU, "anywhere", 30)
    assert sum(v["MODEL_DIM"] % head != 0 for v in before) >= 3
    after = optuna_points(redis_url, prog, GPU, "anywhere", 30)
    assert all(v["MODEL_DIM"] % head == 0 for v in after)
