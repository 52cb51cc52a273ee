"""`swarm export --format mlflow`: log an existing swarm's every record to MLflow at once (the
same runs the live follower writes: a swarm logged live and exported again is not doubled)."""
from __future__ import annotations

from pathlib import Path

from coordinator.state.home import SwarmError
from coordinator.track.base import SwarmRun, TrackerDown
from coordinator.track.config import MlflowTracking


def export_mlflow(swarm_home: Path, info: dict, client, rows: list[dict], *, tracking_uri: str | None,
                  experiment: str | None) -> tuple[int, str]:
    """Write every row (with the records' own log tails when the ledger's redis is there).
    Returns (records written, where). Raises SwarmError (one line) when MLflow does not take it."""
    from coordinator.state.ledger import Ledger
    from coordinator.track.entry import build_runs
    from coordinator.track.mlflow_writer import MlflowWriter

    try:
        cfg = MlflowTracking(tracking_uri=tracking_uri, **({"experiment": experiment} if experiment else {}))
    except ValueError as e:
        raise SwarmError(f"--format mlflow: {str(e).splitlines()[-1].strip()}") from None
    writer = MlflowWriter(cfg, SwarmRun.from_info(info))
    tails = {}
    if client is not None:
        ledger = Ledger(client, info["swarm_id"])
        for r in rows:
            rec = ledger.record(r["experiment_id"])
            if rec is not None and rec.result is not None and rec.result.log_tail:
                tails[r["experiment_id"]] = rec.result.log_tail
    runs = build_runs(rows, Path(swarm_home) / "repo.git", Path(swarm_home), tails)
    try:
        writer.open()
        for run in runs:
            writer.write(run)
        writer.close()
    except TrackerDown as e:
        raise SwarmError(str(e)) from None
    return len(runs), writer.destination()
