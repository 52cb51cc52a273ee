"""swarm.yaml: unknown keys, bad values and clear-text secrets are one-line errors naming file and key."""

import pytest

from coordinator.run.config import (ConfigError, assign_programs, default_config_text, load_config,
                                parse_config, resolve_backend, resolve_program)


def _err(data, env=None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "swarm.yaml", env=env or {})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_default_config_loads_and_every_key_is_commented():
    cfg, _ = load_config(None, env={})
    assert [p.name for p in cfg.programs] == ["baseline", "architecture", "optimizer", "schedule",
                                              "simplify", "explore"]
    assert cfg.redis.url is None and cfg.ray.address is None and cfg.backend.type == "auto"
    lines = default_config_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and line.endswith(":") is False and ":" in line:
            assert lines[i - 1].lstrip().startswith("#"), f"uncommented key: {line}"


def test_unknown_keys_are_named_with_their_dotted_path():
    assert _err({"bugdet": 3}) == ("swarm.yaml: bugdet: unknown key (did you mean 'budget'? valid "
                                   "keys: swarm_home, budget, profile, seed, data, agents, backend, "
                                   "programs, promotion, redis, ray, tracking, allocation)")
    msg = _err({"programs": [{"name": "baseline", "backend": {"type": "litellm", "model": "m",
                                                              "modle": "x"}}]})
    assert msg.startswith("swarm.yaml: programs.0.backend.modle: unknown key (did you mean 'model'? "
                          "valid keys: type, model, api_base")
    assert _err({"promotion": {"alpah": 1}}).startswith("swarm.yaml: promotion.alpah: unknown key (did "
                                                        "you mean 'alpha'? valid keys: min_delta, alpha,")
    # nothing close: only the valid keys
    assert _err({"agents": {"zzz": 1}}) == ("swarm.yaml: agents.zzz: unknown key (valid keys: "
                                            "count, gpus, cpus_per_agent, resource)")


def test_bad_values():
    assert _err({"budget": -5}).startswith("swarm.yaml: budget: ")
    assert "agents.count" in _err({"agents": {"count": 0}})
    assert "programs.0.weight" in _err({"programs": [{"name": "x", "weight": 0}]})
    assert "exactly one of name or path" in _err({"programs": [{"weight": 1}]})


def test_secrets_only_as_env_references():
    assert "a secret may only be given as ${ENV_VAR}" in _err(
        {"programs": [{"name": "b", "backend": {"type": "litellm", "model": "m", "api_key": "sk-123"}}]})
    assert "redis.url: the password in a URL" in _err({"redis": {"url": "redis://:hunter2@10.0.0.1:6379/0"}})
    cfg = parse_config({"redis": {"url": "redis://:${REDIS_PW}@10.0.0.1:6379/0"}}, env={"REDIS_PW": "pw"})
    assert cfg.redis.url == "redis://:pw@10.0.0.1:6379/0"
    assert "REDIS_PW is not set" in _err({"redis": {"url": "redis://:${REDIS_PW}@h:1/0"}})


def test_env_expansion_with_default():
    cfg = parse_config({"swarm_home": "${HOME_X:-/tmp/sw}", "data": {"dir": "${D}/data"}}, env={"D": "/x"})
    assert cfg.swarm_home == "/tmp/sw" and cfg.data.dir == "/x/data"


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("agents:\n  count: 2\n  cpus: 3\n")
    with pytest.raises(ConfigError, match=r"^\S*/my.yaml: agents.cpus: unknown key \(did you mean "
                                          r"'cpus_per_agent'\? valid keys: count, gpus, cpus_per_agent, resource\)$"):
        load_config(p)
    p.write_text("agents: [unclosed\n")
    with pytest.raises(ConfigError, match="my.yaml.*not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_program_resolution(tmp_path):
    cfg = parse_config({"programs": [{"name": "optimizer"}, {"path": "mine.md"}, {"name": "nope"}]}, env={})
    assert resolve_program(cfg.programs[0], tmp_path).name == "optimizer.md"
    with pytest.raises(ConfigError, match="programs.1.path: program file .*mine.md does not exist"):
        resolve_program(cfg.programs[1], tmp_path, index=1)
    (tmp_path / "mine.md").write_text("# mine\n")
    assert resolve_program(cfg.programs[1], tmp_path, index=1) == (tmp_path / "mine.md").resolve()
    with pytest.raises(ConfigError, match="programs.2.name: no program 'nope'"):
        resolve_program(cfg.programs[2], tmp_path, index=2)


def test_auto_backend_picks_litellm_only_with_a_key():
    cfg = parse_config({}, env={})
    assert resolve_backend(cfg.backend, env={}) == {"type": "mutate"}
    b = resolve_backend(cfg.backend, env={"OPENAI_API_KEY": "sk-fake"})
    assert b["type"] == "litellm" and b["api_key_env"] == "OPENAI_API_KEY"
    assert "sk-fake" not in str(b)


def test_assignment_is_weighted_and_deterministic():
    cfg = parse_config({"programs": [{"name": "a", "weight": 2}, {"name": "b"}, {"name": "c"}]}, env={})
    assert assign_programs(cfg.programs, 4) == [0, 1, 2, 0]
    assert assign_programs(cfg.programs, 8).count(0) == 4
    assert assign_programs(cfg.programs, 2) == [0, 1]


# --- a user's file is merged over the shipped defaults ---------------------------------------

def test_a_file_with_only_a_backend_keeps_every_other_default(tmp_path):
    p = tmp_path / "swarm.yaml"
    p.write_text("backend: {type: mutate}\n")
    cfg, base = load_config(p, env={})
    default, _ = load_config(None, env={})
    assert cfg.backend.type == "mutate" and base == tmp_path.resolve()
    assert [e.name for e in cfg.programs] == [e.name for e in default.programs] and len(cfg.programs) == 6
    assert cfg.model_dump(exclude={"backend"}) == default.model_dump(exclude={"backend"})


def test_mappings_merge_key_by_key_and_lists_replace_whole(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("agents: {count: 2}\nprograms:\n  - {name: optimizer, weight: 2}\n")
    cfg, _ = load_config(p, env={})
    assert cfg.agents.count == 2 and cfg.agents.cpus_per_agent == 1   # the rest of agents: kept
    assert [(e.name, e.weight) for e in cfg.programs] == [("optimizer", 2.0)]   # not appended


def test_a_backend_of_another_type_replaces_the_default_backend_whole():
    from coordinator.run.config import merge_over

    base = {"backend": {"type": "litellm", "model": "m", "max_cost_usd": 5}, "budget": 3}
    assert merge_over(base, {"backend": {"type": "mutate"}}) == {"backend": {"type": "mutate"}, "budget": 3}
    assert merge_over(base, {"backend": {"type": "litellm", "model": "n"}})["backend"] == {
        "type": "litellm", "model": "n", "max_cost_usd": 5}
    assert merge_over(base, {"budget": None}) == {"backend": base["backend"], "budget": None}


def test_errors_name_the_file_actually_read(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    p = sub / "other.yaml"
    p.write_text("programs: []\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert str(e.value) == f"{p}: programs: at least one program is needed"
    p.write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"other.yaml: the top level must be a mapping"):
        load_config(p, env={})
