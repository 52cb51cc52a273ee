"""The `swarm` command: help texts, and bad inputs that end in one line, exit 2, nothing created."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SUBCOMMANDS = ["run", "status", "lineage", "report", "export", "stop"]


def swarm(*args, cwd, env_extra=None, timeout=60):
    env = dict(os.environ, SWARM_HOME=str(Path(cwd) / "home"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "coordinator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_top_level_help(tmp_path):
    r = swarm("--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "example:" in r.stdout and "swarm run --agents 2" in r.stdout
    for sub in SUBCOMMANDS + ["prepare", "train"]:
        assert f"    {sub} " in r.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help_has_one_line_and_an_example(sub):
    from coordinator.cli import build_parser
    p = build_parser()
    sp = p._subparsers._group_actions[0].choices[sub]
    text = sp.format_help()
    assert sp.description and "\n" not in sp.description
    assert f"example:\n  swarm {sub}" in text


def _bad(tmp_path, *args, expect, env_extra=None, timeout=60):
    r = swarm(*args, cwd=tmp_path, env_extra=env_extra, timeout=timeout)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expect in lines[0]
    assert not (tmp_path / "home").exists(), "a bad input must not create SWARM_HOME"
    return lines[0]


def test_unknown_config_key(tmp_path):
    (tmp_path / "swarm.yaml").write_text("budget: 10\nagents:\n  cuont: 2\n")
    _bad(tmp_path, "run", expect="swarm.yaml: agents.cuont: unknown key")


def test_missing_program_file(tmp_path):
    (tmp_path / "swarm.yaml").write_text("programs:\n  - path: nowhere.md\n")
    _bad(tmp_path, "run", expect="programs.0.path: program file")


def test_negative_budget(tmp_path):
    _bad(tmp_path, "run", "--budget", "-3", expect="--budget: must be greater than 0")
    (tmp_path / "swarm.yaml").write_text("budget: -3\n")
    _bad(tmp_path, "run", expect="swarm.yaml: budget:")


def test_more_gpus_than_exist(tmp_path):
    _bad(tmp_path, "run", "--gpus", "64", expect="asked for 64 GPU(s)")


def test_more_cpu_agents_than_cores(tmp_path):
    # 3 agents on this 2-core machine (cpu-smoke, 4 minutes) trained 31 runs, every one of them
    # contended (the swarm's own agents waiting for a core), judged nothing, and ended advising
    # "a quieter machine". A local CPU swarm that cannot give each agent its cores is refused.
    cores = len(os.sched_getaffinity(0))
    line = _bad(tmp_path, "run", "--agents", str(cores + 1), "--profile", "cpu",
                expect=f"{cores + 1} agents x 1 CPU each need {cores + 1} cores")
    assert f"use --agents {cores} or fewer" in line and "contended" in line
    (tmp_path / "swarm.yaml").write_text(f"agents:\n  cpus_per_agent: {cores + 1}\n")
    _bad(tmp_path, "run", "--agents", "1", "--profile", "cpu",
         expect=f"swarm.yaml: agents.cpus_per_agent {cores + 1} is more than the {cores} core")


def test_unreachable_redis(tmp_path):
    _bad(tmp_path, "run", "--redis-url", f"redis://127.0.0.1:{closed_port()}/0",
         expect="cannot reach redis at")


def test_wrong_redis_password(tmp_path, redis_daemon):
    url = f"redis://:wrong-password@127.0.0.1:{redis_daemon.port}/0"
    line = _bad(tmp_path, "run", "--redis-url", url, expect="refused the password")
    assert "wrong-password" not in line and redis_daemon.password not in line


def test_unreachable_ray_address(tmp_path):
    _bad(tmp_path, "run", "--address", f"127.0.0.1:{closed_port()}", expect="cannot reach Ray at",
         timeout=30)


def test_secret_in_clear_in_config(tmp_path):
    (tmp_path / "swarm.yaml").write_text("redis:\n  url: redis://:hunter2@127.0.0.1:6379/0\n")
    line = _bad(tmp_path, "run", expect="may only be given as ${ENV_VAR}")
    assert "hunter2" not in line


def test_morning_after_commands_without_a_swarm(tmp_path):
    for sub in ("status", "lineage", "export"):
        _bad(tmp_path, sub, expect="no swarm here")


@pytest.mark.parametrize("sub", ["prepare", "train"])
def test_delegated_help_has_one_line_and_an_example(sub, tmp_path):
    # `swarm prepare` and `swarm train` hand their argv to the trainer's own parsers.
    r = swarm(sub, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"example:\n  swarm {sub}" in r.stdout


def test_resume_with_another_budget_is_refused(tmp_path):
    # Results under another budget would be compared with this swarm's best (invariant 1).
    import json

    home = tmp_path / "home"
    home.mkdir()
    info = {"swarm_id": "sw-x", "runs": 1, "redis": "embedded", "profile": "cpu", "budget": 20.0}
    (home / "swarm.json").write_text(json.dumps(info))
    r = swarm("run", "--profile", "cpu", "--budget", "10", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--budget 20" in lines[0] and "--swarm-home" in lines[0]
    assert sorted(p.name for p in home.iterdir()) == ["swarm.json"]  # nothing created
    assert json.loads((home / "swarm.json").read_text()) == info


def _llm_yaml(tmp_path, backend: str, program_backend: bool = False) -> None:
    where = (f"programs:\n  - name: baseline\n    backend: {backend}\n" if program_backend
             else f"backend: {backend}\nprograms:\n  - name: baseline\n")
    (tmp_path / "swarm.yaml").write_text("budget: 10\nagents: {count: 1}\n" + where)


def test_preflight_catches_a_closed_port(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    _llm_yaml(tmp_path, f'{{type: litellm, model: "openai/local", api_base: "{url}", timeout_s: 5}}')
    line = _bad(tmp_path, "run", expect="backend check failed for program baseline", timeout=120)
    assert url in line and "connection refused" in line and "openai/local" in line


def test_preflight_catches_a_model_without_provider(tmp_path):
    _llm_yaml(tmp_path, '{type: litellm, model: "gemma3", api_base: "http://127.0.0.1:9/v1"}')
    line = _bad(tmp_path, "run", expect="backend check failed for program baseline", timeout=120)
    assert "'gemma3'" in line and "LLM Provider NOT provided" in line


def test_preflight_catches_a_missing_command(tmp_path):
    _llm_yaml(tmp_path, '{type: command, template: "no-such-agent-cli -p {prompt_file}"}')
    _bad(tmp_path, "run", expect="command 'no-such-agent-cli'", timeout=120)


def test_missing_key_names_the_top_level_backend(tmp_path):
    _llm_yaml(tmp_path, '{type: litellm, model: "openai/x", api_key_env: NO_SUCH_KEY_ENV}')
    _bad(tmp_path, "run", expect="swarm.yaml: backend.api_key_env: environment variable NO_SUCH_KEY_ENV")
    _llm_yaml(tmp_path, '{type: litellm, model: "openai/x", api_key_env: NO_SUCH_KEY_ENV}', True)
    _bad(tmp_path, "run", expect="swarm.yaml: programs.0.backend.api_key_env: environment variable")


def test_unknown_key_lists_the_closest_and_the_valid_keys(tmp_path):
    _llm_yaml(tmp_path, '{type: litellm, model: "openai/x", timeout: 30}')
    line = _bad(tmp_path, "run", expect="swarm.yaml: backend.timeout: unknown key (did you mean 'timeout_s'?")
    assert "valid keys: type, model" in line


def test_errors_name_the_config_file_given(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "other.yaml").write_text("programs: []\n")
    _bad(tmp_path, "run", "--config", "conf/other.yaml",
         expect="conf/other.yaml: programs: at least one program is needed")
    (tmp_path / "conf" / "other.yaml").write_text("programs:\n  - path: nowhere.md\n")
    _bad(tmp_path, "run", "--config", "conf/other.yaml", expect="conf/other.yaml: programs.0.path: program file")


def test_a_swarm_yaml_with_only_a_backend_is_planned_over_the_defaults(tmp_path, monkeypatch):
    # The checks of `swarm run` (nothing started): a one-line file keeps the shipped programs.
    from coordinator.cli import build_parser
    from coordinator.run.swarm import plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWARM_HOME", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "swarm.yaml").write_text("backend: {type: mutate}\n")
    monkeypatch.setattr("coordinator.run.swarm.usable_cpus", lambda: 8)  # six agents need six cores
    p = plan(build_parser().parse_args(["run", "--agents", "6", "--profile", "cpu", "--budget", "5"]))
    assert sorted(a["program_name"] for a in p.agent_specs) == sorted(
        ["baseline", "optimizer", "architecture", "schedule", "simplify", "explore"])
    assert {a["backend"]["type"] for a in p.agent_specs} == {"mutate"}
    assert not (tmp_path / ".swarm").exists()


def test_minutes_is_a_deadline_like_hours_and_not_both(tmp_path, monkeypatch, capsys):
    # The README's first command is time-boxed (`--minutes 8`): the agents start no run that
    # would end past it.
    import time

    from coordinator.cli import build_parser
    from coordinator.run.swarm import plan

    monkeypatch.chdir(tmp_path)
    (tmp_path / "swarm.yaml").write_text("backend: {type: mutate}\n")
    base = ["run", "--agents", "2", "--profile", "cpu", "--budget", "5"]
    t = time.time()
    assert plan(build_parser().parse_args(base + ["--minutes", "8"])).deadline == pytest.approx(t + 480, abs=30)
    assert plan(build_parser().parse_args(base + ["--hours", "0.5"])).deadline == pytest.approx(t + 1800, abs=30)
    assert plan(build_parser().parse_args(base)).deadline is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--hours", "1", "--minutes", "8"])
    assert "not allowed with argument" in capsys.readouterr().err


def _option_helps(text: str) -> dict[str, str]:
    """--flag -> its help text, read from argparse's --help output."""
    out: dict[str, str] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if m:
            cur = max(re.findall(r"--?[A-Za-z][\w-]*", m.group(1)), key=len)
            out[cur] = (m.group(2) or "").strip()
        elif cur and line.startswith("      ") and line.strip():
            out[cur] = f"{out[cur]} {line.strip()}".strip()
        else:
            cur = None
    return out


ALL_SUBCOMMANDS = SUBCOMMANDS + ["prepare", "train"]
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, tuple[dict[str, str], str]]:
    """command -> (its flags and their help, the whole --help text)."""
    cwd = tmp_path_factory.mktemp("help")
    out = {}
    for sub in ["", *ALL_SUBCOMMANDS]:
        r = swarm(*([sub] if sub else []), "--help", cwd=cwd)
        assert r.returncode == 0, r.stderr
        out[sub] = (_option_helps(r.stdout), r.stdout)
        assert "--help" in out[sub][0], r.stdout
    return out


@pytest.mark.parametrize("sub", ["", *ALL_SUBCOMMANDS])
def test_every_flag_has_help(helps, sub):
    missing = [flag for flag, text in helps[sub][0].items() if not text]
    assert not missing, f"swarm {sub}: no help for {missing}"


def test_the_readme_lists_every_flag_of_every_command(helps):
    text = README.read_text()
    table = text[text.index("### Every command and flag"):]
    rows = {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\| `swarm ?([a-z]*)` \| (.*) \|$", table, re.M)}
    assert set(rows) == set(helps), "one README row per command"
    for sub, (flags, whole) in helps.items():
        in_readme = set(re.findall(r"--[a-z][a-z-]*", rows[sub]))
        in_help = {f for f in flags if f.startswith("--")} - {"--help"}
        assert in_help <= in_readme, f"swarm {sub}: the README misses {sorted(in_help - in_readme)}"
        extra = {f for f in in_readme - in_help if f not in whole}
        assert not extra, f"swarm {sub}: the README lists {sorted(extra)}, --help does not"


def test_true_defaults_in_help(helps):
    assert "$SWARM_HOME/runs/manual-<time>" in helps["train"][0]["--run-dir"]
    assert "parquet (the default)" in helps["export"][0]["--format"]
    assert "- for stdout" in helps["export"][0]["--output"]
    assert "default 300" in helps["stop"][0]["--timeout"]


def test_export_parquet_to_stdout_is_refused(tmp_path):
    _bad(tmp_path, "export", "--output", "-", expect="--output - needs --format tsv or json")
