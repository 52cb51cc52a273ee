"""Locked evaluation process: loads the exported model, probes causality, scores val (and confirm).

Run as `python -I -m trainer.evaluate SPEC.json` by the runner; no train.py code runs here,
only the exported graph of its model.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def run(spec: dict) -> dict:
    import numpy as np
    import torch

    from trainer.dataloader import TokenDocs
    from trainer.metric import MetricError, check_causal, eval_batches, evaluate_bpb

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    t0 = time.monotonic()
    try:
        ep = torch.export.load(spec["model_path"])
    except Exception as e:
        return {"error": f"exported model could not be loaded: {type(e).__name__}"}
    params = set(ep.graph_signature.parameters)
    num_params = int(sum(v.numel() for k, v in ep.state_dict.items() if k in params))
    model = ep.module()
    prepared = Path(spec["prepared_dir"])
    tb = np.load(prepared / "token_bytes.npy")
    kw = dict(batch=spec["eval_batch"], seq_len=spec["max_seq_len"], eval_tokens=spec["eval_tokens"],
              device=spec["device"])
    out: dict = {"num_params": num_params}
    try:
        val = TokenDocs(prepared, "val")
        x, _ = next(eval_batches(val, spec["eval_batch"], spec["max_seq_len"], spec["eval_tokens"]))
        check_causal(model, torch.from_numpy(x).to(spec["device"]), len(tb), seed=spec.get("seed", 0))
        out["val_bpb"] = evaluate_bpb(model, val, tb, **kw)
        cb = spec.get("confirm_below")
        if cb is not None and out["val_bpb"] < cb:
            out["confirm_bpb"] = evaluate_bpb(model, TokenDocs(prepared, "confirm"), tb, **kw)
    except MetricError as e:
        return {"error": str(e), "num_params": num_params}
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return {"error": f"evaluation failed: {type(e).__name__}: {msg}", "num_params": num_params}
    out["eval_seconds"] = time.monotonic() - t0
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    res = run(spec)
    _write(Path(spec["result_path"]), res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
