"""The model artifact (locked): checks a torch.export archive written by hostile code, and loads
it without pickle, with only allowed ops, and with the weights the runner received at submit.

`check_archive` needs no torch (the runner calls it before anything loads the file):
- members: only the ones torch.export.save writes for one model (no extra/, no AOTInductor,
  no legacy pickled weights), one top folder, bounded sizes;
- no member is ever unpickled: weight/constant configs must say use_pickle=false, and the
  sample-inputs pickle is never read (torch.export.load would read it, with a
  weights_only=False fallback: we do not call it);
- the graph: static shapes only (no symbolic expressions: their strings go to sympy's eval),
  no guards code (compiled to Python by ep.module()), no custom objects, no nested graphs, no
  outputs that mutate state, identifier-only names, and every op in ALLOWED_OPS.
`load_model` (in the evaluator) rebuilds the program from the checked JSON with all metadata
dropped, takes every parameter and buffer from the submitted weights (so nothing done after
submit is scored), and counts every tensor the model carries.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

MAX_JSON = 64 << 20          # bytes of models/model.json
MAX_SMALL_CONSTANT = 4096    # elements in all constants that were not submitted, together

# The ops a GPT needs, as torch.export writes them (training IR, before decompositions).
# Anything else is refused with its name, so a new legitimate op is a one-line addition here.
_OPS = """
embedding linear matmul mm bmm addmm baddbmm einsum
add.Tensor add.Scalar sub.Tensor sub.Scalar rsub.Scalar rsub.Tensor mul.Tensor mul.Scalar
div.Tensor div.Scalar div.Tensor_mode floor_divide remainder.Scalar remainder.Tensor neg abs sign
pow.Tensor_Scalar pow.Tensor_Tensor pow.Scalar square sqrt rsqrt exp exp2 log log2 log1p expm1
sin cos tanh sigmoid relu relu_ gelu silu mish softplus hardtanh leaky_relu elu clamp clamp_min
clamp_max clip maximum minimum reciprocal erf lerp.Scalar lerp.Tensor
softmax.int log_softmax.int _softmax _log_softmax _safe_softmax
layer_norm rms_norm group_norm native_layer_norm batch_norm scaled_dot_product_attention
dropout native_dropout
view reshape _unsafe_view flatten.using_ints unflatten.int transpose.int permute t contiguous expand
expand_as squeeze squeeze.dim squeeze.dims unsqueeze slice.Tensor select.int narrow split.Tensor
split_with_sizes chunk unbind.int cat stack repeat repeat_interleave.self_int roll flip tril triu
index.Tensor index_select gather where.self where.ScalarOther where.ScalarSelf masked_fill.Scalar
masked_fill.Tensor clone alias detach lift_fresh_copy to.dtype to.dtype_layout to.device _to_copy
type_as float half bfloat16 zeros_like ones_like full_like empty_like arange.start arange.default
arange.start_step zeros ones full
sum.dim_IntList sum.default mean.dim mean.default amax amin max.dim min.dim var.correction std.correction
norm.ScalarOpt_dim linalg_vector_norm cumsum argmax
eq.Tensor eq.Scalar ne.Tensor ne.Scalar lt.Tensor lt.Scalar le.Tensor le.Scalar gt.Tensor gt.Scalar
ge.Tensor ge.Scalar logical_and logical_or logical_not bitwise_not isnan
_assert_tensor_metadata sym_size.int
"""


def _op_names() -> frozenset[str]:
    out = set()
    for tok in _OPS.split():
        name, _, overload = tok.partition(".")
        out.add(f"torch.ops.aten.{name}.{overload or 'default'}")
    return frozenset(out)


ALLOWED_OPS = _op_names()
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
          "models/model.json", "data/weights/model_weights_config.json",
          "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"}
_PAYLOAD = re.compile(r"^data/(weights/weight_\d{1,6}|constants/(tensor|constant)_\d{1,6})$")
_DENY_KEYS = {"as_expr", "as_sym_int", "as_sym_ints", "as_sym_float", "as_sym_floats", "as_sym_bool",
              "as_sym_bools", "as_custom_obj", "as_graph", "as_operator", "as_optional_tensors",
              "custom_obj", "token", "as_complex"}
_INPUT_KINDS = {"parameter", "buffer", "tensor_constant", "user_input"}


class ArtifactError(Exception):
    """The artifact is refused: one line saying why."""


def _members(zf: zipfile.ZipFile, max_bytes: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    infos = zf.infolist()
    if not infos:
        raise ArtifactError("empty archive")
    prefix = infos[0].filename.split("/", 1)[0]
    if not _IDENT.match(prefix.replace(".", "_").replace("-", "_")):
        raise ArtifactError("archive folder name is not plain")
    out: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for i in infos:
        name = i.filename
        if not name.startswith(prefix + "/") or name in out:
            raise ArtifactError(f"unexpected archive member {name[:80]!r}")
        rel = name[len(prefix) + 1:]
        if rel not in _FIXED and not _PAYLOAD.match(rel):
            raise ArtifactError(f"unexpected archive member {rel[:80]!r}")
        if i.compress_type != zipfile.ZIP_STORED:
            raise ArtifactError(f"compressed archive member {rel[:80]!r}")
        total += i.file_size
        out[rel] = i
    if total > max_bytes:
        raise ArtifactError(f"archive holds {total >> 20} MB, over the {max_bytes >> 20} MB limit")
    for need in ("archive_format", "archive_version", "models/model.json",
                 "data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
        if need not in out:
            raise ArtifactError(f"archive lacks {need}")
    return prefix, out


def _json(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> object:
    if info.file_size > MAX_JSON:
        raise ArtifactError(f"{info.filename} is too large")
    try:
        return json.loads(zf.read(info))
    except (ValueError, RecursionError):
        raise ArtifactError(f"{info.filename} is not JSON") from None


def _walk_keys(obj: object, depth: int = 0) -> None:
    if depth > 64:
        raise ArtifactError("graph JSON nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _DENY_KEYS and v is not None:
                raise ArtifactError(f"graph uses {k.removeprefix('as_')} (only static tensor graphs are scored)")
            _walk_keys(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _walk_keys(v, depth + 1)


def _check_payload_config(cfg: object, what: str) -> dict:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        raise ArtifactError(f"malformed {what} config")
    for fqn, meta in cfg["config"].items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ArtifactError(f"{what} {str(fqn)[:80]!r} is a pickle (refused)")
        if not re.match(r"^(weight|tensor|constant)_\d{1,6}$", str(meta.get("path_name"))):
            raise ArtifactError(f"{what} {str(fqn)[:80]!r} has an unexpected file name")
        tm = meta.get("tensor_meta")
        if not isinstance(tm, dict) or not all(isinstance(s, dict) and set(s) == {"as_int"}
                                               for s in tm.get("sizes", [None])):
            raise ArtifactError(f"{what} {str(fqn)[:80]!r} has no static shape")
    return cfg["config"]


def _check_graph(prog: object) -> dict:
    if not isinstance(prog, dict) or not isinstance(prog.get("graph_module"), dict):
        raise ArtifactError("malformed graph")
    if prog.get("range_constraints") not in ({}, None):
        raise ArtifactError("graph has symbolic shapes (export with static shapes)")
    if prog.get("guards_code") not in ([], None):
        raise ArtifactError("graph carries guards code (refused)")
    if not all(v in ("TRAINING", "ATEN", "") for v in prog.get("verifiers") or []):
        raise ArtifactError("graph has an unknown verifier")
    _walk_keys(prog)
    gm = prog["graph_module"]
    graph = gm.get("graph") or {}
    for k in ("sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values"):
        if graph.get(k):
            raise ArtifactError(f"graph has {k} (only static tensor graphs are scored)")
    for name in graph.get("tensor_values") or {}:
        if not _IDENT.match(name):
            raise ArtifactError(f"tensor name {name[:80]!r} is not an identifier")
    nodes = graph.get("nodes")
    if not isinstance(nodes, list):
        raise ArtifactError("graph has no node list")
    for n in nodes:
        if not isinstance(n, dict) or not _IDENT.match(str(n.get("name"))):
            raise ArtifactError("graph node without an identifier name")
        if n.get("target") not in ALLOWED_OPS:
            raise ArtifactError(f"op not allowed: {str(n.get('target'))[:100]}")
    sig = gm.get("signature") or {}
    for spec in sig.get("input_specs") or []:
        kind = next(iter(spec), None) if isinstance(spec, dict) else None
        if kind not in _INPUT_KINDS:
            raise ArtifactError(f"graph input of kind {kind!r} (refused)")
    for spec in sig.get("output_specs") or []:
        kind = next(iter(spec), None) if isinstance(spec, dict) else None
        if kind != "user_output":
            raise ArtifactError(f"graph output of kind {kind!r}: the forward must not mutate state")
    return prog


def check_archive(path: str | Path, max_bytes: int = 8 << 30) -> None:
    """Raise ArtifactError (one line) unless `path` is a torch.export archive of one static,
    pickle-free graph using only ALLOWED_OPS. Reads JSON members only; imports no torch."""
    try:
        with zipfile.ZipFile(path) as zf:
            prefix, members = _members(zf, max_bytes)
            if zf.read(members["archive_format"]).strip() != b"pt2":
                raise ArtifactError("not a pt2 archive")
            _check_payload_config(_json(zf, members["data/weights/model_weights_config.json"]), "weight")
            _check_payload_config(_json(zf, members["data/constants/model_constants_config.json"]), "constant")
            _check_graph(_json(zf, members["models/model.json"]))
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"not a readable archive ({type(e).__name__})") from None


# --- loading (evaluator side: torch) ---------------------------------------------------------

def _strip_metadata(prog: dict) -> dict:
    """Node metadata (stack traces, module paths) ends up in generated code comments: drop it."""
    for n in prog["graph_module"]["graph"]["nodes"]:
        n["metadata"] = {}
    prog["graph_module"]["metadata"] = {}
    return prog


def read_weights(weights: str | Path, index: list[dict]) -> dict:
    """The submitted tensors by name, as CPU tensors (no pickle: raw bytes + the index)."""
    import torch

    data = bytearray(Path(weights).read_bytes())
    out = {}
    for t in index:
        dtype = getattr(torch, t["dtype"])
        n = math.prod(t["shape"])
        if n == 0:
            out[t["name"]] = torch.zeros(t["shape"], dtype=dtype)
            continue
        out[t["name"]] = torch.frombuffer(data, dtype=dtype, count=n, offset=t["offset"]).reshape(t["shape"])
    return out


def load_model(model: str | Path, weights: str | Path, index: list[dict], device: str = "cpu"):
    """(module, num_params): the checked graph with the submitted tensors in it. Raises
    ArtifactError when a graph tensor was not submitted (or has another shape or dtype)."""
    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import (ExportedProgramDeserializer, _dict_to_dataclass,
                                               deserialize_scalar_type)

    check_archive(model)
    submitted = read_weights(weights, index)
    with zipfile.ZipFile(model) as zf:
        prefix, members = _members(zf, 8 << 30)
        prog = _strip_metadata(_check_graph(_json(zf, members["models/model.json"])))
        weights_cfg = _json(zf, members["data/weights/model_weights_config.json"])
        tables = {"weight": _check_payload_config(weights_cfg, "weight"),
                  "constant": _check_payload_config(_json(zf, members["data/constants/model_constants_config.json"]),
                                                    "constant")}
        state, consts, small = {}, {}, 0
        for what, table in tables.items():
            for fqn, meta in table.items():
                tm = meta["tensor_meta"]
                dtype = deserialize_scalar_type(tm["dtype"])
                sizes = [s["as_int"] for s in tm["sizes"]]
                if fqn in submitted:
                    t = submitted[fqn]
                    if list(t.shape) != sizes or t.dtype != dtype:
                        raise ArtifactError(f"{what} {fqn[:80]!r} differs from the submitted tensor "
                                            f"({list(t.shape)} {t.dtype} vs {sizes} {dtype})")
                elif what == "constant":
                    # a constant made inside forward (torch.tensor(0.5)): small ones only
                    small += math.prod(sizes)
                    if small > MAX_SMALL_CONSTANT:
                        raise ArtifactError(f"constant {fqn[:80]!r} was not submitted "
                                            f"(more than {MAX_SMALL_CONSTANT} such elements)")
                    raw = bytearray(zf.read(members[f"data/constants/{meta['path_name']}"]))
                    if len(raw) != math.prod(sizes) * torch.empty((), dtype=dtype).element_size():
                        raise ArtifactError(f"constant {fqn[:80]!r} has the wrong size")
                    t = (torch.frombuffer(raw, dtype=dtype).reshape(sizes) if raw
                         else torch.zeros(sizes, dtype=dtype))
                else:
                    raise ArtifactError(f"weight {fqn[:80]!r} was not submitted")
                t = t.clone()
                if meta.get("is_param"):
                    t = torch.nn.Parameter(t, requires_grad=False)
                (state if what == "weight" else consts)[fqn] = t
    try:
        sep = _dict_to_dataclass(schema.ExportedProgram, prog)
        ep = ExportedProgramDeserializer().deserialize(sep, state, consts, None)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"graph could not be rebuilt: {type(e).__name__}") from None
    seen: dict[int, int] = {}
    for t in list(ep.state_dict.values()) + list(ep.constants.values()):
        if isinstance(t, torch.Tensor):
            seen[id(t)] = t.numel()
    num_params = sum(seen.values())
    return ep.module().to(device), num_params
