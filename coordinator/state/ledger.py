"""The ledger: an append-only redis stream of started/record/decision/job events, plus exports,
and the redis connection it lives on.

Writes are idempotent by id: a Lua script checks the lookup hash and appends to the stream in
one atomic step, so a retried report never doubles. `Ledger` also reads without Ray (the CLI's
status/lineage/export commands) and writes the parquet snapshot, TSV and JSON.

Row schema (one row per experiment, `rows()`): every ExperimentRecord field except `result`,
flattened result fields `memory_gb`, `training_seconds`, `total_seconds`, `steps`, `tokens`,
`num_params`, then the latest decision: `decision`, `decision_reason`, `best_before`,
`best_after`, `decision_delta`, `margin`, `sigma`, `samples`, `suspect`, `merge_commit`,
`decided_at`, `simplification`, and the labelled `delta_best` / `delta_parent` (+ = better), `dof`,
`beat_best`, `mean`, `samples_best`, `best_mean`, and the result's `contention` / `contended` / `node`. TSV
columns: commit val_bpb memory_gb status description agent program parent, then the rest in
ROW_COLUMNS order; `status` uses the original's vocabulary (keep/discard/crash) plus ours
(pending, conflict, did-not-stack, carried, unjudged, timeout, invalid, rejected, sample).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import redis
import tenacity
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from agents.messages import Decision, ExperimentRecord, Job, StartedExperiment
from coordinator.state import keys
from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)


class LedgerError(RuntimeError):
    """The ledger (redis) cannot be reached or holds something unreadable."""


def redis_endpoint(url: str) -> str:
    """host:port of a redis URL, for messages: the URL itself holds the password."""
    u = urlparse(url)
    return f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"


def connect_redis(url: str, retry_s: float = 30.0, wait_s: float = 0.0) -> redis.Redis:
    """A client that retries with backoff while redis restarts mid-run. Raises LedgerError (one line).

    wait_s: how long to wait for an unreachable redis before giving up (0: fail at once, for a
    first start; a restarted coordinator waits, since redis may be coming back too)."""
    try:
        where = redis_endpoint(url)
        probe = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    except ValueError as e:  # the message names the scheme, never the password
        raise LedgerError(f"bad redis URL: {str(e).splitlines()[0][:120]}") from None

    def ping() -> None:
        try:
            probe.ping()
        except redis.AuthenticationError:
            raise LedgerError(f"redis at {where} refused the password in the redis URL") from None
        except redis.ResponseError as e:
            if "auth" in str(e).lower() or "NOAUTH" in str(e):
                raise LedgerError(f"redis at {where} needs a password the redis URL does not give") from None
            raise LedgerError(f"redis at {where} answered an error: {str(e).splitlines()[0][:120]}") from None
        probe.close()

    said = [0.0]

    def say(state: tenacity.RetryCallState) -> None:
        if time.monotonic() - said[0] >= 10:   # a restarted coordinator may wait minutes: say so
            said[0] = time.monotonic()
            log.warning("redis at %s unreachable; waiting up to %.0f s more", where,
                        wait_s - state.seconds_since_start)

    try:
        tenacity.Retrying(stop=tenacity.stop_after_delay(wait_s), wait=tenacity.wait_fixed(0.2),
                          retry=tenacity.retry_if_exception_type(
                              (redis.ConnectionError, redis.TimeoutError, OSError)),
                          before_sleep=say, reraise=True)(ping)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        raise LedgerError(f"cannot reach redis at {where} (is redis-server running?)") from None
    retries = max(1, int(retry_s / 0.5))
    return redis.Redis.from_url(
        url, socket_connect_timeout=3, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError])


_APPEND = """
if ARGV[4] == '0' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'type', ARGV[3], 'id', ARGV[1], 'json', ARGV[2])
return 1
"""

KEEP = {"promote", "merge", "simplification"}

ROW_SCHEMA = pa.schema([
    ("commit", pa.string()), ("val_bpb", pa.float64()), ("memory_gb", pa.float64()),
    ("status", pa.string()), ("description", pa.string()), ("agent", pa.string()),
    ("program", pa.string()), ("parent", pa.string()),
    ("experiment_id", pa.string()), ("swarm_id", pa.string()), ("kind", pa.string()),
    ("backend", pa.string()), ("seed", pa.int64()), ("hardware_class", pa.string()),
    ("run_status", pa.string()), ("reason", pa.string()), ("confirm_bpb", pa.float64()),
    ("parent_val_bpb", pa.float64()), ("delta", pa.float64()), ("lines_added", pa.int64()),
    ("lines_removed", pa.int64()), ("fix_attempts", pa.int64()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("cost_usd", pa.float64()), ("started_at", pa.float64()),
    ("finished_at", pa.float64()), ("job_id", pa.string()),
    ("training_seconds", pa.float64()), ("total_seconds", pa.float64()), ("steps", pa.int64()),
    ("tokens", pa.int64()), ("num_params", pa.int64()),
    ("decision", pa.string()), ("decision_reason", pa.string()), ("best_before", pa.string()),
    ("best_after", pa.string()), ("decision_delta", pa.float64()), ("margin", pa.float64()),
    ("sigma", pa.float64()), ("samples", pa.int64()), ("suspect", pa.bool_()),
    ("merge_commit", pa.string()), ("decided_at", pa.float64()), ("simplification", pa.bool_()),
    # Labelled deltas, one sign convention (+ = better): against best at the decision, and
    # against the record's parent (the coordinator's means; else the agent's own one run).
    ("delta_best", pa.float64()), ("delta_parent", pa.float64()), ("dof", pa.int64()),
    ("beat_best", pa.bool_()),
    # What the decision compared (views: coordinator/state/figures.py): the candidate's mean
    # over its samples and how many samples of best it was judged against; and the machine's
    # own speed during the run (a contended run is flagged by the runner).
    ("mean", pa.float64()), ("samples_best", pa.int64()), ("best_mean", pa.float64()),
    ("contention", pa.float64()), ("contended", pa.bool_()),
    # The host the run trained on: runs of one train.py on one node at the same time share the
    # machine's drift (promotion.concurrent)
    ("node", pa.string()),
])
ROW_COLUMNS = ROW_SCHEMA.names


def tsv_status(record_status: str, decision: str | None) -> str:
    """The original's status vocabulary (keep/discard/crash) extended with ours."""
    if decision in KEEP:
        return "keep"
    if decision is None:
        return "crash" if record_status == "crash" else "pending"
    return decision


def to_row(rec: ExperimentRecord, dec: Decision | None) -> dict:
    r = rec.model_dump(exclude={"result", "status"})
    res = rec.result
    row = {c: None for c in ROW_COLUMNS}
    row.update(r)
    row["run_status"] = rec.status
    mem = res.peak_memory_mb if res else None
    row["memory_gb"] = mem / 1024 if mem is not None else None
    for f in ("training_seconds", "total_seconds", "steps", "tokens", "num_params", "contention", "node"):
        row[f] = getattr(res, f) if res else None
    row["contended"] = bool(res.contended) if res else False
    if dec is not None:
        row.update(decision=dec.decision, decision_reason=dec.reason, best_before=dec.best_before,
                   best_after=dec.best_after, decision_delta=dec.delta, margin=dec.margin,
                   sigma=dec.sigma, samples=dec.samples, suspect=dec.suspect,
                   merge_commit=dec.merge_commit, decided_at=dec.decided_at,
                   simplification=dec.decision == "simplification", delta_best=dec.delta,
                   delta_parent=dec.delta_parent if dec.delta_parent is not None else rec.delta,
                   dof=dec.dof, beat_best=dec.beat_best, mean=dec.mean,
                   samples_best=dec.samples_best, best_mean=dec.best_mean)
    else:
        row.update(suspect=False, simplification=False, beat_best=False, delta_parent=rec.delta)
    row["status"] = tsv_status(rec.status, dec.decision if dec else None)
    return row


class Ledger:
    """Reader and writer of one swarm's ledger in redis (prefix `swarm:<swarm_id>:`)."""

    def __init__(self, client, swarm_id: str):
        self.r = client
        self.swarm_id = swarm_id
        self.prefix = keys.prefix(swarm_id)
        self._append = client.register_script(_APPEND)
        self._pipe = None

    @contextmanager
    def batch(self):
        """Buffer every write inside into one MULTI/EXEC: one round trip and one AOF fsync for
        a whole batch of decisions. Writes reach redis at flush() or at the end of the block."""
        if self._pipe is not None:
            yield
            return
        self._pipe = self.r.pipeline(transaction=True)
        try:
            yield
        finally:
            pipe, self._pipe = self._pipe, None
            pipe.execute()

    def flush(self) -> None:
        """Make the writes buffered so far durable now (before a git ref moves)."""
        if self._pipe is not None and len(self._pipe):
            self._pipe.execute()

    def key(self, name: str) -> str:
        return keys.ledger_key(self.swarm_id, name)

    # -- writing ------------------------------------------------------------------------------
    def _add(self, typ: str, hash_name: str, id: str, payload: str, overwrite: bool) -> bool:
        """Append atomically unless the id is there (overwrite=False). In a batch the answer is
        not known yet and True is returned: callers check their own cache first."""
        keys, args = [self.key(hash_name), self.key("ledger")], [id, payload, typ, "1" if overwrite else "0"]
        if self._pipe is not None:
            # EVAL, not EVALSHA: a pipeline holding a Script asks SCRIPT EXISTS first (one more
            # round trip per batch), and a redis restarted from its AOF has no scripts loaded.
            self._pipe.eval(_APPEND, len(keys), *keys, *args)
            return True
        return bool(self._append(keys=keys, args=args))

    def add_started(self, s: StartedExperiment) -> bool:
        return self._add("started", "started", s.experiment_id, s.model_dump_json(), False)

    def add_record(self, rec: ExperimentRecord) -> bool:
        """Append a record; False (and nothing written) when its experiment id is already there."""
        return self._add("record", "records", rec.experiment_id, rec.model_dump_json(), False)

    def put_decision(self, d: Decision) -> None:
        """Append a decision; a later one for the same experiment supersedes it (pending -> promote)."""
        self._add("decision", "decisions", d.experiment_id, d.model_dump_json(), True)

    def put_allocation(self, agent: str, payload: str) -> None:
        """Append an agent's reassignment (decide/allocation.py); the hash keeps its latest."""
        self._add("allocation", "allocation", agent, payload, True)

    def add_job(self, job: Job) -> bool:
        return self._add("job", "jobs", job.job_id, json.dumps({"job": job.model_dump(),
                         "agent": None, "leased_at": None, "done": False}), False)

    def _writer(self):
        """The open batch, else the client itself."""
        return self._pipe if self._pipe is not None else self.r

    def set(self, key: str, value: str) -> None:
        """SET a full key name, inside the open batch when there is one."""
        self._writer().set(key, value)

    def update_job(self, job_id: str, state: dict) -> None:
        # Lease bookkeeping is mutable state, not history: hash only, not the stream.
        self._writer().hset(self.key("jobs"), job_id, json.dumps(state))

    # -- reading ------------------------------------------------------------------------------
    def events(self, batch: int = 2000) -> Iterator[tuple[str, str, str]]:
        """(type, id, json) for every stream entry, oldest first."""
        start = "-"
        while True:
            chunk = self.r.xrange(self.key("ledger"), min=start, count=batch)
            if not chunk:
                return
            for _eid, fields in chunk:
                f = {_s(k): _s(v) for k, v in fields.items()}
                yield f["type"], f["id"], f["json"]
            last = _s(chunk[-1][0])
            start = "(" + last
            if len(chunk) < batch:
                return

    def record(self, exp_id: str) -> ExperimentRecord | None:
        v = self.r.hget(self.key("records"), exp_id)
        return ExperimentRecord.model_validate_json(v) if v else None

    def decision(self, exp_id: str) -> Decision | None:
        v = self.r.hget(self.key("decisions"), exp_id)
        return Decision.model_validate_json(v) if v else None

    def jobs(self) -> dict[str, dict]:
        return {_s(k): json.loads(v) for k, v in self.r.hgetall(self.key("jobs")).items()}

    def rows(self) -> list[dict]:
        """One row per experiment, in the order records reached the ledger (schema above)."""
        decisions = {_s(k): Decision.model_validate_json(v)
                     for k, v in self.r.hgetall(self.key("decisions")).items()}
        out = []
        for typ, id, js in self.events():
            if typ == "record":
                out.append(to_row(ExperimentRecord.model_validate_json(js), decisions.get(id)))
        return out

    def counts(self) -> dict[str, int]:
        return {n: int(self.r.hlen(self.key(n))) for n in ("started", "records", "decisions", "jobs")}

    # -- exports ------------------------------------------------------------------------------
    def write_parquet(self, path: Path) -> Path:
        return write_parquet_rows(self.rows(), path)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _schema(extra: pa.Schema | None) -> pa.Schema:
    """ROW_SCHEMA, then the derived columns a view appends (`swarm export`), if any."""
    return pa.schema(list(ROW_SCHEMA) + list(extra)) if extra is not None else ROW_SCHEMA


def write_parquet_rows(rows: list[dict], path: Path, extra: pa.Schema | None = None) -> Path:
    """Write rows (ROW_SCHEMA, then `extra`) to parquet atomically (temp file, then os.replace)."""
    schema = _schema(extra)
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
    return atomic_write(path, lambda f: pq.write_table(table, f))


def read_parquet_rows(path: Path) -> list[dict]:
    """Rows from a snapshot, for when redis cannot be brought back."""
    return pq.read_table(path).to_pylist()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return str(v).replace("\t", " ").replace("\n", " ")


def _write_text(out, fn) -> None:
    if isinstance(out, (str, Path)):
        buf = io.StringIO(newline="")
        fn(buf)
        atomic_write(out, buf.getvalue())
    else:
        fn(out)


def write_tsv_rows(rows: list[dict], out: Path | IO[str] = sys.stdout, extra: pa.Schema | None = None) -> None:
    """TSV: the original's five columns, then agent, program, parent, then the rest (then `extra`)."""
    cols = _schema(extra).names

    def fn(f):
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(cols)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in cols])
    _write_text(out, fn)


def write_json_rows(rows: list[dict], out: Path | IO[str] = sys.stdout, extra: pa.Schema | None = None) -> None:
    cols = _schema(extra).names
    _write_text(out, lambda f: json.dump([{c: r.get(c) for c in cols} for r in rows], f, indent=1))
