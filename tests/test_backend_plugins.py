"""Backends are registered with their config model in one call; a user's backend, installed as
a package with an `autoresearch_swarm.backends` entry point, validates in swarm.yaml through the
real config loader and is built by make_backend, exactly like a built-in."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from agents.backends.base import ENTRY_POINT_GROUP, backend_types, register_backend
from coordinator.run.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A user's proposal backend: it proposes `train.py` with one comment line appended."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.backends.base import Proposal, register_backend


class EchoSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["echo"] = "echo"
    text: str
    repeat: int = Field(default=1, ge=1)


class EchoBackend:
    name = "echo"

    def __init__(self, spec, *, seed=0, agent=""):
        self.spec, self.seed, self.agent = spec, seed, agent

    def propose(self, ctx):
        return Proposal(description="echo", new_source=ctx.source + "# " + self.spec.text * self.spec.repeat + "\\n")

    def fix(self, ctx, log_tail):
        return Proposal(error="echo cannot fix")


register_backend("echo", EchoBackend, EchoSpec)
'''

CHECK = '''
import json, sys
from pathlib import Path
from agents.backends.base import ProposalContext, backend_types, make_backend
from agents.program import Program
from coordinator.run.config import ConfigError, load_config, resolve_backend

cfg, _ = load_config(Path(sys.argv[1]), env={})
spec = resolve_backend(cfg.programs[0].backend or cfg.backend)
backend = make_backend(spec, seed=3, agent="a0")
ctx = ProposalContext(program=Program(name="p", text="# p"), source="X = 1\\n", base_commit="0" * 40, agent="a0")
out = {"spec": spec, "class": type(backend).__name__, "module": type(backend).__module__,
       "seed": backend.seed, "source": backend.propose(ctx).new_source}
try:
    load_config(Path(sys.argv[2]), env={})
except ConfigError as e:
    out["bad"] = str(e)
out["known"] = sorted(backend_types())
print(json.dumps(out))
'''


def _install_plugin(site: Path) -> None:
    """What `pip install` leaves on disk for a one-module package with an entry point."""
    (site / "swarm_echo_backend.py").write_text(PLUGIN)
    dist = site / "swarm_echo_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: swarm-echo-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho = swarm_echo_backend\n"
                                           "broken = swarm_broken_backend\n")
    (site / "swarm_broken_backend.py").write_text("raise ImportError('needs a package that is not here')\n")
    (dist / "RECORD").write_text("")


def test_entry_point_backend_validates_in_swarm_yaml_and_builds(tmp_path):
    """A user's package with an entry point: swarm.yaml names its type, load_config validates
    it against the package's model, make_backend builds it; a broken sibling is skipped."""
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site)
    good = tmp_path / "swarm.yaml"
    good.write_text(textwrap.dedent("""\
        backend: {type: mutate}
        programs:
          - name: baseline
            backend: {type: echo, text: "hi", repeat: 2}
        """))
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: {type: echo, text: hi, colour: red}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", CHECK, str(good), str(bad)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["spec"] == {"type": "echo", "text": "hi", "repeat": 2}
    assert (res["class"], res["module"], res["seed"]) == ("EchoBackend", "swarm_echo_backend", 3)
    assert res["source"] == "X = 1\n# hihi\n"
    # the plugin's own model forbids unknown keys, like a built-in's
    assert res["bad"] == f"{bad}: backend.colour: unknown key (valid keys: type, text, repeat)"
    # a plugin that fails to import is skipped with a warning; the others still load
    assert res["known"] == ["auto", "command", "echo", "litellm", "mutate", "optuna"]
    assert "backend plugin broken (swarm_broken_backend) failed to load: ImportError" in out.stderr


def test_without_the_plugin_its_type_is_unknown_and_the_error_lists_the_known_types():
    with pytest.raises(ConfigError) as e:
        parse_config({"backend": {"type": "echo", "text": "hi"}}, env={})
    assert str(e.value) == ("swarm.yaml: backend: unknown backend type 'echo' "
                            "(known: auto, command, litellm, mutate, optuna)")
    with pytest.raises(ConfigError, match=r"^swarm.yaml: programs.0.backend: a backend needs a `type`"):
        parse_config({"programs": [{"name": "b", "backend": {"model": "m"}}]}, env={})


def test_builtins_register_with_their_config_model():
    types = backend_types()
    assert {"auto", "command", "litellm", "mutate"} <= set(types)
    for name, t in types.items():
        assert t.config.model_fields["type"].default == name
        assert t.config.model_config.get("extra") == "forbid"


def test_register_needs_a_model_with_a_type_field():
    class NoType(BaseModel):
        model_config = ConfigDict(extra="forbid")
        x: int = 1

    with pytest.raises(TypeError, match="`type` field"):
        register_backend("notype", object, NoType)
    assert "notype" not in backend_types()
