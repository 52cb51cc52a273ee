"""MLflow: one run per swarm in the configured experiment (tags swarm_id, swarm.role=swarm) and
a child run per record (tag mlflow.parentRunId), each found again by its tags, so writing the
same record twice updates its run (pending -> merge) instead of adding one.

mlflow is imported on first use: `import mlflow` took 4-18 s on this machine (2 cores, loaded).
"""
from __future__ import annotations

import logging
import os
import time

from coordinator.track.base import SwarmRun, TrackerDown, destination_key, one_line
from coordinator.track.config import MlflowTracking
from coordinator.track.entry import TrackedRun

log = logging.getLogger(__name__)

ROLE = "swarm.role"
# log_batch limits of the MLflow REST API (per call)
MAX_PARAMS, MAX_TAGS = 100, 100


def _mlflow():
    # MLflow's HTTP client retries a dead server 7 times with backoff (minutes per call); the
    # follower has its own backoff and must notice an outage in seconds. A user's setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # litellm (imported by parts of mlflow) fetches a price list at import without this
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow, MlflowClient, Metric, Param, RunTag


def _quote(v: str) -> str:
    return v.replace("'", "\\'")


class MlflowWriter:
    name = "mlflow"

    def __init__(self, cfg: MlflowTracking, swarm: SwarmRun):
        self.cfg = cfg
        self.swarm = swarm
        self.client = None
        self.experiment_id: str | None = None
        self.parent: str | None = None
        self.children: dict[str, str] = {}    # experiment id -> MLflow run id

    def _uri(self) -> str | None:
        return self.cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None

    def destination(self) -> str:
        from coordinator.state.home import redact_url
        return f"MLflow at {redact_url(self._uri()) or 'its default store'}, experiment {self.cfg.experiment!r}"

    def key(self) -> str:
        return destination_key(self.name, self._uri(), self.cfg.experiment)

    def open(self) -> None:
        """Find or create the experiment, the swarm's run and the index of its children."""
        if self.client is not None:
            return
        try:
            _, MlflowClient, *_ = _mlflow()
            client = MlflowClient(tracking_uri=self._uri())
            exp = client.get_experiment_by_name(self.cfg.experiment)
            if exp is None:
                try:
                    eid = client.create_experiment(self.cfg.experiment)
                except Exception:   # created meanwhile by another writer
                    exp = client.get_experiment_by_name(self.cfg.experiment)
                    if exp is None:
                        raise
                    eid = exp.experiment_id
            else:
                eid = exp.experiment_id
            sid = _quote(self.swarm.swarm_id)
            found = client.search_runs([eid], f"tags.swarm_id = '{sid}' and tags.`{ROLE}` = 'swarm'",
                                       max_results=1)
            if found:
                parent = found[0].info.run_id
                client.update_run(parent, status="RUNNING")
            else:
                start = int((self.swarm.created_at or time.time()) * 1000)
                parent = client.create_run(eid, start_time=start, run_name=self.swarm.swarm_id,
                                           tags={"swarm_id": self.swarm.swarm_id, ROLE: "swarm"}).info.run_id
                self._batch(client, parent, {}, self.swarm.params, {})
            children: dict[str, str] = {}
            token = None
            while True:
                page = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent}'",
                                          max_results=1000, page_token=token)
                for r in page:
                    if "experiment_id" in r.data.tags:
                        children[r.data.tags["experiment_id"]] = r.info.run_id
                token = page.token
                if not token:
                    break
        except TrackerDown:
            raise
        except Exception as e:
            raise TrackerDown(f"{self.destination()}: {one_line(e)}") from None
        self.client, self.experiment_id, self.parent, self.children = client, eid, parent, children
        log.info("tracking: %s, swarm run %s (%d records there)", self.destination(), parent, len(children))

    def _batch(self, client, run_id: str, metrics: dict, params: dict, tags: dict, ts: int = 0) -> None:
        _, _, Metric, Param, RunTag = _mlflow()
        ts = ts or int(time.time() * 1000)
        m = [Metric(k, v, ts, 0) for k, v in metrics.items()]
        p = [Param(k, v) for k, v in params.items()]
        t = [RunTag(k, v) for k, v in tags.items()]
        while m or p or t:
            client.log_batch(run_id, metrics=m[:1000], params=p[:MAX_PARAMS], tags=t[:MAX_TAGS])
            m, p, t = m[1000:], p[MAX_PARAMS:], t[MAX_TAGS:]

    def write(self, run: TrackedRun) -> None:
        """Create or update the record's child run: params, metrics, tags, the two artifacts,
        and its end (FINISHED, or FAILED for crash / timeout / invalid)."""
        self.open()
        client = self.client
        try:
            rid = self.children.get(run.experiment_id)
            if rid is None:
                rid = client.create_run(
                    self.experiment_id, start_time=int(run.started_at * 1000), run_name=run.name,
                    tags={"mlflow.parentRunId": self.parent, "experiment_id": run.experiment_id}).info.run_id
                self.children[run.experiment_id] = rid
            end = int(run.finished_at * 1000)
            self._batch(client, rid, run.metrics, run.params, {**run.tags, "mlflow.runName": run.name}, end)
            if run.diff:
                client.log_text(rid, run.diff, "train.py.diff")
            if run.log_tail:
                client.log_text(rid, run.log_tail, "run.log.tail")
            client.set_terminated(rid, "FAILED" if run.failed else "FINISHED", end_time=end)
        except Exception as e:
            raise TrackerDown(f"{self.destination()}: {one_line(e)}") from None

    def close(self) -> None:
        """The swarm run ends (FINISHED); a resumed swarm sets it RUNNING again."""
        if self.client is None or self.parent is None:
            return
        try:
            self.client.set_terminated(self.parent, "FINISHED")
        except Exception as e:
            log.warning("tracking: %s: could not end the swarm run: %s", self.destination(), one_line(e))
