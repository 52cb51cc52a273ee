"""The model artifact (locked): a graph of aten ops, traced by api.submit and sent with the
weights at submit, checked without torch and run by a small interpreter. Nothing in it is code.

Why not torch.export: an exported program is rebuilt by torch's code generation from the names it
carries (a parameter named `weight")\\n<python>#` ran Python in the evaluator), and it is written
after submit, so 40 s of work after the clock could be baked into it as literals. This graph has
no names at all: a node is [op, args, kwargs]; a tensor argument is {"t": k} (the k-th submitted
tensor), {"x": 0} (the input) or {"v": [n, i]} (output i of node n); every other argument is a
JSON literal or one of a few tagged enums. It travels in the submit frame with the weights, so
the clock covers everything in it. Literals (ints, floats, bools) count as parameters.

    {"format": FORMAT, "input": [B, T], "tensors": [{name, dtype, shape, offset, nbytes}...],
     "nodes": [[op, [args], {kwargs}], ...], "output": {"v": [n, 0]}}

`check_graph` (no torch) is run by the runner when the submit arrives and again by the evaluator;
`Program` (torch) runs a checked graph: ops are looked up by name in ALLOWED_OPS only, every
device argument becomes the evaluation device, and a forward that changes one of its own
tensors (through any alias) is an error, so a scored graph holds no state between calls.
"""
from __future__ import annotations

import json
import math
import re

FORMAT = "swarm-graph/1"
MAX_GRAPH_BYTES = 64 << 20   # the graph JSON; the baseline's is ~60 KB
MAX_NODES = 200_000
MAX_LITERALS = 1 << 20       # counted as parameters too; the baseline has ~1,000
MAX_TENSORS = 100_000
MAX_DEPTH = 6                # nesting of argument lists

# The ops a GPT needs, as a dispatch-level trace records them (after autograd's decompositions).
# Not here on purpose: random ops (rand*, bernoulli, dropout, native_dropout), uninitialised
# memory (empty*, new_empty, resize_: a channel between passes), training-mode batch norm (it
# updates buffers), data-dependent shapes or control flow (nonzero, masked_select, item),
# scatter/index_put (nondeterministic on CUDA), as_strided, sort. A legitimate new op is a
# one-line addition.
_OPS = """
embedding index_select gather index.Tensor take
mm addmm bmm baddbmm matmul linear dot addmv mv einsum
add.Tensor add.Scalar sub.Tensor sub.Scalar rsub.Scalar rsub.Tensor mul.Tensor mul.Scalar
div.Tensor div.Scalar div.Tensor_mode div.Scalar_mode floor_divide remainder.Scalar remainder.Tensor
fmod.Scalar fmod.Tensor neg abs sign pow.Tensor_Scalar pow.Tensor_Tensor pow.Scalar sqrt rsqrt exp exp2
expm1 log log2 log10 log1p sin cos tan atan tanh sigmoid relu gelu silu mish softplus hardtanh
hardswish hardsigmoid leaky_relu elu celu selu clamp clamp.Tensor clamp_min clamp_max maximum minimum
reciprocal erf floor ceil round trunc frac lerp.Scalar lerp.Tensor addcmul addcdiv square
_softmax _log_softmax _safe_softmax softmax.int log_softmax.int logsumexp
native_layer_norm native_group_norm _fused_rms_norm _native_batch_norm_legit_no_training
_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
_scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
view _unsafe_view reshape _reshape_alias flatten.using_ints unflatten.int transpose.int permute t
expand expand_as squeeze squeeze.dim squeeze.dims unsqueeze slice.Tensor select.int narrow
split.Tensor split_with_sizes chunk unbind.int cat stack hstack vstack repeat repeat_interleave.self_int
roll flip tril triu constant_pad_nd pad diagonal movedim.int unfold
clone alias detach lift_fresh lift_fresh_copy _to_copy to.dtype to.dtype_layout to.device contiguous
zeros_like ones_like full_like arange.default arange.start arange.start_step zeros ones full
scalar_tensor new_zeros new_ones new_full eye linspace
sum.dim_IntList sum.default mean.dim mean.default prod.default prod.dim_int var.correction
std.correction var_mean.correction amax amin max.dim min.dim max.default min.default argmax argmin
cumsum cumprod norm.ScalarOpt_dim linalg_vector_norm any.default any.dim all.default all.dim
eq.Tensor eq.Scalar ne.Tensor ne.Scalar lt.Tensor lt.Scalar le.Tensor le.Scalar gt.Tensor gt.Scalar
ge.Tensor ge.Scalar logical_and logical_or logical_not logical_xor bitwise_not bitwise_and.Tensor
bitwise_or.Tensor isnan isinf isfinite where.self where.ScalarOther where.ScalarSelf
masked_fill.Scalar masked_fill.Tensor nan_to_num
add_.Tensor add_.Scalar sub_.Tensor sub_.Scalar mul_.Tensor mul_.Scalar div_.Tensor div_.Scalar
neg_ relu_ tanh_ sigmoid_ exp_ sqrt_ rsqrt_ pow_.Scalar clamp_ clamp_min_ clamp_max_
masked_fill_.Scalar masked_fill_.Tensor fill_.Scalar zero_ copy_ tril_ triu_
"""


def _op_names() -> frozenset[str]:
    out = set()
    for tok in _OPS.split():
        name, _, overload = tok.partition(".")
        out.add(f"aten.{name}.{overload or 'default'}")
    return frozenset(out)


ALLOWED_OPS = _op_names()
# An in-place op (name ending in "_") writes into its first argument: that must be a value this
# forward computed, never a submitted tensor or the input. Writes through an alias of a
# submitted tensor are caught when the forward ends (its version counter moved).
INPLACE = frozenset(op for op in ALLOWED_OPS if op.split(".")[1].endswith("_"))
DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                    "uint8", "bool"})
STRINGS = frozenset({"none", "tanh", "trunc", "floor"})
LAYOUTS = frozenset({"strided"})
MEMORY_FORMATS = frozenset({"contiguous_format", "preserve_format"})
DEVICES = re.compile(r"^(cpu|cuda|cuda:\d{1,2})$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}(\.[A-Za-z0-9_]{1,100}){0,15}$")  # a dotted identifier
KWARG = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_ENUMS = {"dtype": DTYPES, "layout": LAYOUTS, "memory_format": MEMORY_FORMATS, "s": STRINGS}


class ArtifactError(Exception):
    """The artifact is refused: one line saying why. Checked before any val token is read, so the
    line holds only what train.py itself wrote."""


def check_index(index: object, nbytes: int) -> list[dict]:
    """The tensor table of a submit: exactly `nbytes` bytes, back to back, of known dtypes, each
    named with a dotted identifier (names are labels for people, never looked up)."""
    from trainer.wire import DTYPES as SIZES

    if not isinstance(index, list) or len(index) > MAX_TENSORS:
        raise ArtifactError("the tensor table is not a list")
    off, names, out = 0, set(), []
    for k, t in enumerate(index):
        if not isinstance(t, dict) or set(t) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise ArtifactError(f"tensor {k} is not described by name, dtype, shape, offset, nbytes")
        name, dt, shape = t["name"], t["dtype"], t["shape"]
        if not isinstance(name, str) or not NAME.match(name):
            raise ArtifactError(f"tensor {k} has a name that is not a dotted identifier")
        if name in names:
            raise ArtifactError(f"tensor {k} repeats the name {name}")
        if dt not in SIZES or not isinstance(shape, list) or len(shape) > 8 \
                or not all(type(s) is int and 0 <= s < 2**40 for s in shape):
            raise ArtifactError(f"tensor {k} ({name}) has an unknown dtype or a bad shape")
        size = math.prod(shape) * SIZES[dt]
        if t["offset"] != off or t["nbytes"] != size:
            raise ArtifactError(f"tensor {k} ({name}) does not sit where the table says")
        names.add(name)
        off += size
        out.append({"name": name, "dtype": dt, "shape": shape, "offset": off - size, "nbytes": size})
    if off != nbytes:
        raise ArtifactError(f"the tensor table describes {off} bytes, {nbytes} were sent")
    return out


class _Count:
    def __init__(self):
        self.literals = 0


def _check_arg(a: object, node: int, n_tensors: int, c: _Count, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ArtifactError(f"node {node}: arguments nested too deeply")
    if a is None:
        return
    if isinstance(a, (bool, int, float)):
        c.literals += 1
        return
    if isinstance(a, list):
        for b in a:
            _check_arg(b, node, n_tensors, c, depth + 1)
        return
    if not isinstance(a, dict) or len(a) != 1:
        raise ArtifactError(f"node {node}: an argument of an unknown kind")
    (tag, v), = a.items()
    if tag == "t":
        if type(v) is not int or not 0 <= v < n_tensors:
            raise ArtifactError(f"node {node}: refers to a tensor that was not submitted")
    elif tag == "x":
        if v != 0:
            raise ArtifactError(f"node {node}: refers to an input that does not exist")
    elif tag == "v":
        if not (isinstance(v, list) and len(v) == 2 and all(type(i) is int for i in v)
                and 0 <= v[0] < node and 0 <= v[1] < 64):
            raise ArtifactError(f"node {node}: refers to a value not computed before it")
    elif tag == "f":
        if v not in _NONFINITE:
            raise ArtifactError(f"node {node}: an unknown float")
        c.literals += 1
    elif tag == "device":
        if not isinstance(v, str) or not DEVICES.match(v):
            raise ArtifactError(f"node {node}: an unknown device")
    elif tag in _ENUMS:
        if v not in _ENUMS[tag]:
            raise ArtifactError(f"node {node}: an unknown {tag}")
    else:
        raise ArtifactError(f"node {node}: an argument of an unknown kind")


def trace_batch(device: str, eval_batch: int) -> int:
    """Rows of the input api.submit records the forward on, and the evaluator runs it on. On CPU
    one row: the recorded forward is paid inside the budget (a 16-row batch took 0.3-2 s of the
    baseline's, over the 1 s tolerance), a row costs the same per row there (20 ms each, measured),
    and no row can see another. On GPU the eval batch: one-row launches would double its eval."""
    return eval_batch if device.startswith("cuda") else 1


def check_graph(graph: object, shape: tuple[int, int] | None = None) -> int:
    """Raise ArtifactError unless `graph` (parsed JSON) is a well-formed graph of allowed ops over
    its tensor table; returns the number of literals in it. `shape`: the eval batch (B, T); the
    graph's input must be (B, T) or (1, T). Imports no torch."""
    if not isinstance(graph, dict) or set(graph) != {"format", "input", "tensors", "nodes", "output"}:
        raise ArtifactError("not a graph (format, input, tensors, nodes, output)")
    if graph["format"] != FORMAT:
        raise ArtifactError(f"graph format is not {FORMAT}")
    inp = graph["input"]
    if not (isinstance(inp, list) and len(inp) == 2 and all(type(s) is int and s > 0 for s in inp)):
        raise ArtifactError("graph input is not a (batch, seq) shape")
    if shape is not None and tuple(inp) not in {tuple(shape), (1, shape[1])}:
        raise ArtifactError(f"graph was traced on input {tuple(inp)}, not {tuple(shape)} or {(1, shape[1])}")
    tensors, nodes = graph["tensors"], graph["nodes"]
    if not isinstance(tensors, list) or not tensors:
        raise ArtifactError("the model has no tensors")
    if not isinstance(nodes, list) or not 0 < len(nodes) <= MAX_NODES:
        raise ArtifactError("graph has no nodes (or too many)")
    c = _Count()
    for n, node in enumerate(nodes):
        if not (isinstance(node, list) and len(node) == 3 and isinstance(node[1], list)
                and isinstance(node[2], dict)):
            raise ArtifactError(f"node {n} is not [op, args, kwargs]")
        op, args, kwargs = node
        if op not in ALLOWED_OPS:
            raise ArtifactError(f"op not allowed: {re.sub(r'[^A-Za-z0-9_.]', '?', str(op)[:100])}")
        for a in args:
            _check_arg(a, n, len(tensors), c)
        for k, a in kwargs.items():
            if not KWARG.match(k):
                raise ArtifactError(f"node {n}: a keyword that is not an identifier")
            _check_arg(a, n, len(tensors), c)
        if op in INPLACE and not (args and isinstance(args[0], dict) and "v" in args[0]):
            raise ArtifactError(f"node {n}: {op} writes into a submitted tensor or the input")
        if c.literals > MAX_LITERALS:
            raise ArtifactError(f"graph has more than {MAX_LITERALS} literals")
    out = graph["output"]
    _check_arg(out, len(nodes), len(tensors), c)
    if not (isinstance(out, dict) and "v" in out):
        raise ArtifactError("graph output is not a computed value")
    return c.literals


def _no_constant(name: str):
    raise ValueError(f"JSON constant {name}")  # NaN / Infinity travel as {"f": ...}


def parse_graph(raw: bytes, nbytes: int, shape: tuple[int, int] | None = None) -> tuple[dict, int]:
    """(graph, literals) from the submit's graph bytes, with its tensor table checked against the
    `nbytes` of weights that came with it."""
    if len(raw) > MAX_GRAPH_BYTES:
        raise ArtifactError("graph is too large")
    try:
        graph = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ArtifactError("graph is not JSON") from None
    literals = check_graph(graph, shape)
    graph["tensors"] = check_index(graph["tensors"], nbytes)
    return graph, literals


# --- running it (evaluator side: torch) --------------------------------------------------------

def read_tensors(weights: str, index: list[dict], device: str):
    """The submitted tensors, in table order, on `device` (raw bytes + the table: no pickle)."""
    import torch

    data = bytearray(open(weights, "rb").read())
    out = []
    for t in index:
        dtype = getattr(torch, t["dtype"])
        n = math.prod(t["shape"])
        x = (torch.frombuffer(data, dtype=dtype, count=n, offset=t["offset"]).reshape(t["shape"])
             if n else torch.zeros(t["shape"], dtype=dtype))
        out.append(x.clone().to(device))
    return out


class OpFailed(Exception):
    """An op of the graph raised; `op` is its allow-listed name (the message is dropped: it may
    be built from the values, i.e. from val tokens)."""

    def __init__(self, op: str, oom: bool = False):
        super().__init__(op)
        self.op, self.oom = op, oom


class StateChanged(Exception):
    """The forward wrote into one of its own submitted tensors."""


class Program:
    """A checked graph and its tensors, callable as model(idx) -> logits."""

    def __init__(self, graph: dict, tensors: list, device: str):
        import torch

        self.device = torch.device(device)
        self.tensors = tensors
        self.shape = tuple(graph["input"])
        self.nodes = []
        last_use: dict[int, int] = {}
        for n, (op, args, kwargs) in enumerate(graph["nodes"]):
            for ref in _refs(args) + _refs(list(kwargs.values())):
                last_use[ref] = n
            name, overload = op[len("aten."):].split(".")
            fn = getattr(getattr(torch.ops.aten, name), overload)  # `op` is one of ALLOWED_OPS
            args = [self._decode(a) for a in args]
            kwargs = {k: self._decode(v) for k, v in kwargs.items()}
            _no_dropout(op, fn, args, kwargs)
            self.nodes.append((op, fn, args, kwargs))
        out = graph["output"]["v"]
        last_use[out[0]] = len(self.nodes)
        self.out = out
        # values no later node reads are dropped as the forward goes (a GPT's activations would
        # otherwise all be held: ~20 GB for the gpu profile's eval batch)
        self.free_after: list[list[int]] = [[] for _ in self.nodes]
        for v, n in last_use.items():
            if n < len(self.nodes):
                self.free_after[n].append(v)
        self.versions = [t._version for t in tensors]

    def _decode(self, a):
        import torch

        if isinstance(a, list):
            return [self._decode(b) for b in a]
        if isinstance(a, dict):
            if len(a) == 1:
                (tag, v), = a.items()
                if tag == "t":
                    return _Ref("t", v, 0)
                if tag == "x":
                    return _Ref("x", 0, 0)
                if tag == "v":
                    return _Ref("v", v[0], v[1])
                if tag == "f":
                    return _NONFINITE[v]
                if tag == "device":
                    return self.device  # every device the trace named is the evaluation's
                if tag == "dtype":
                    return getattr(torch, v)
                if tag == "layout":
                    return torch.strided
                if tag == "memory_format":
                    return getattr(torch, v)
                if tag == "s":
                    return v
            raise ArtifactError("an argument of an unknown kind")
        return a

    def __call__(self, x):
        import torch

        if tuple(x.shape) != self.shape:
            raise ValueError(f"input {tuple(x.shape)} is not {self.shape}")
        vals: dict[int, list] = {}
        for n, (op, fn, args, kwargs) in enumerate(self.nodes):
            try:
                out = fn(*_subst(args, vals, self.tensors, x), **_subst(kwargs, vals, self.tensors, x))
            except torch.OutOfMemoryError:
                raise OpFailed(op, oom=True) from None
            except Exception:
                raise OpFailed(op) from None
            vals[n] = list(out) if isinstance(out, (tuple, list)) else [out]
            for v in self.free_after[n]:
                vals.pop(v, None)
        n, i = self.out
        try:
            y = vals[n][i]
        except (KeyError, IndexError):
            raise OpFailed(self.nodes[n][0]) from None
        if [t._version for t in self.tensors] != self.versions:
            raise StateChanged()
        return y


class _Ref:
    __slots__ = ("kind", "a", "b")

    def __init__(self, kind: str, a: int, b: int):
        self.kind, self.a, self.b = kind, a, b


def _refs(a) -> list[int]:
    if isinstance(a, list):
        return [r for b in a for r in _refs(b)]
    if isinstance(a, dict) and set(a) == {"v"}:
        return [a["v"][0]]
    return []


def _no_dropout(op: str, fn, args: list, kwargs: dict) -> None:
    """Attention kernels take a dropout probability: random outputs are refused (a scored graph
    is a pure function of its input)."""
    names = [a.name for a in fn._schema.arguments]
    bound = dict(zip(names, args)) | kwargs
    if bound.get("dropout_p") not in (None, 0, 0.0) or bound.get("return_debug_mask") is True:
        raise ArtifactError(f"{op} with dropout in a scored graph")


def _subst(a, vals: dict, tensors: list, x):
    if isinstance(a, _Ref):
        if a.kind == "t":
            return tensors[a.a]
        if a.kind == "x":
            return x
        try:
            v = vals[a.a][a.b]
        except (KeyError, IndexError):
            raise ValueError("a value the graph refers to was not computed") from None
        return v
    if isinstance(a, list):
        return [_subst(b, vals, tensors, x) for b in a]
    if isinstance(a, dict):
        return {k: _subst(v, vals, tensors, x) for k, v in a.items()}
    return a


def load_program(graph_path: str, weights_path: str, device: str = "cpu",
                 shape: tuple[int, int] | None = None) -> tuple[Program, int]:
    """(program, num_params): the checked graph with the submitted tensors; num_params counts
    every element of every submitted tensor and every literal of the graph."""
    import os

    size = os.path.getsize(graph_path)
    if size > MAX_GRAPH_BYTES:
        raise ArtifactError("graph is too large")
    with open(graph_path, "rb") as f:
        raw = f.read()
    nbytes = os.path.getsize(weights_path)
    graph, literals = parse_graph(raw, nbytes, shape)
    tensors = read_tensors(weights_path, graph["tensors"], device)
    num_params = sum(math.prod(t["shape"]) for t in graph["tensors"]) + literals
    return Program(graph, tensors, device), num_params
