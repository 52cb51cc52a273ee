"""The morning-after commands: status, lineage, report, export, from SWARM_HOME without Ray.

The ledger comes from redis (running, or brought back from its AOF by home.ledger_redis),
else from the parquet snapshot `swarm run` writes when it stops.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from coordinator.state.home import HomeError, SwarmHome, ledger_redis, unsafe_warning

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ledger_rows(home: SwarmHome, info: dict, redis_url: str | None):
    """Yields (redis client or None, rows)."""
    from coordinator.state.ledger import Ledger, read_parquet_rows

    with ledger_redis(home, redis_url) as client:
        if client is not None:
            yield client, Ledger(client, info["swarm_id"]).rows()
            return
        if home.ledger_snapshot.is_file():
            yield None, read_parquet_rows(home.ledger_snapshot)
            return
        raise HomeError(f"{home.root}: neither the ledger's redis nor {home.ledger_snapshot} "
                        "can be read")


def repo_path(home: SwarmHome) -> Path:
    return home.root / "repo.git"


def ledger_figures(home: SwarmHome, info: dict, redis_url: str | None):
    """(rows, figures): the ledger's rows and figures.compute over them with the best the
    coordinator published (when redis is there), the one source of every figure shown."""
    from coordinator.run.live import published
    from coordinator.state.figures import compute

    with ledger_rows(home, info, redis_url) as (client, rows):
        pub = published(client, info["swarm_id"])
    return rows, compute(rows, pub)


def status(home: SwarmHome, info: dict, args) -> int:
    from rich.console import Console

    from coordinator.run import live

    running = home.running_pid() is not None
    with ledger_rows(home, info, args.redis_url) as (client, rows):
        data = live.gather(client, info["swarm_id"], rows, running=running)
    data["lost_winners"] = _lost_winners(home, rows)
    data["unsafe_no_sandbox"] = bool(info.get("unsafe_no_sandbox"))
    warning = unsafe_warning(info)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    state = "running" if data["running"] else "stopped"
    Console().print(live.render(data, title=f"swarm {info['swarm_id']} ({state}) in {home.root}"))
    if warning:
        Console().print(f"[bold red]{warning}[/]")
    return 0


def _lost_winners(home: SwarmHome, rows: list[dict]) -> list[dict]:
    """The lost-winner audit: results that beat best by the margin and are not on best."""
    from coordinator.decide.audit import lost_winners_from_rows
    from coordinator.state.repo import ResearchRepo

    repo = ResearchRepo(repo_path(home))
    if not repo.exists():
        return []
    best_refs = list(repo.refs("refs/heads/best/").values())
    on_best = set(repo.git("rev-list", *best_refs).split()) if best_refs else set()
    return lost_winners_from_rows(rows, lambda c: c in on_best)


def _graph(home: SwarmHome, info: dict, redis_url: str | None):
    from coordinator.review.lineage import build_lineage

    rows, fig = ledger_figures(home, info, redis_url)
    return rows, fig, build_lineage(rows, repo_path(home), fig)


def lineage(home: SwarmHome, info: dict, args) -> int:
    from coordinator.review.lineage import best_subgraph

    _, _, G = _graph(home, info, args.redis_url)
    if args.format == "tree":
        from coordinator.review.report.tree import render_tree
        _emit(render_tree(G, all=args.all), args.output)
        return 0
    from coordinator.review.report.export import write_graph
    if not args.all:  # as the tree: best's commits only; --all adds every other result
        G = best_subgraph(G)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_graph(G, args.format, out)
        print(f"wrote {out}")
    else:
        write_graph(G, args.format, sys.stdout)
    return 0


def _emit(text: str, output: str | None) -> None:
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text if text.endswith("\n") else text + "\n")
        tmp.replace(out)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def report(home: SwarmHome, info: dict, args) -> int:
    from coordinator.review.report.html import ReportError, build_report

    rows, fig, G = _graph(home, info, args.redis_url)
    out = Path(args.output) if args.output else home.reports_dir
    try:
        path = build_report(rows, G, repo_path=repo_path(home), swarm_home=home.root, out_dir=out,
                            studies=_studies(home, info, args.redis_url), warning=unsafe_warning(info),
                            fig=fig, lost=_lost_winners(home, rows),
                            allocation=_allocation(home, info, args.redis_url))
    except ReportError as e:
        raise HomeError(str(e)) from None
    print(f"wrote {path}")
    return 0


def _allocation(home: SwarmHome, info: dict, redis_url: str | None) -> dict | None:
    """The report's allocation section's data (report/allocation.py); None without redis."""
    from coordinator.review.report.allocation import load_allocation

    try:
        with ledger_redis(home, redis_url) as client:
            return load_allocation(client, info["swarm_id"])
    except Exception as e:  # the rest of the report does not need it
        log.warning("no allocation section: %s", e)
        return None


def _studies(home: SwarmHome, info: dict, redis_url: str | None) -> list:
    """The swarm's Optuna studies (the report's search section); [] when it has none or its
    redis cannot be read (the parquet snapshot holds the ledger, not the studies)."""
    from coordinator.review.report.search import load_studies

    try:
        with ledger_redis(home, redis_url) as client:
            return load_studies(client, info["swarm_id"])
    except Exception as e:  # the rest of the report does not need them
        log.warning("no search section: the studies cannot be read (%s)", e)
        return []


def _on_best(home: SwarmHome):
    """commit -> is it an ancestor of a best ref (one git call)."""
    from coordinator.state.repo import ResearchRepo

    repo = ResearchRepo(repo_path(home))
    tips = list(repo.refs("refs/heads/best/").values()) if repo.exists() else []
    on_best = set(repo.git("rev-list", *tips).split()) if tips else set()
    return lambda c: c in on_best


def export(home: SwarmHome, info: dict, args) -> int:
    import pyarrow as pa

    from coordinator.state.figures import export_columns
    from coordinator.state.ledger import write_json_rows, write_parquet_rows, write_tsv_rows

    if args.format == "mlflow":
        from coordinator.track.export import export_mlflow
        with ledger_rows(home, info, args.redis_url) as (client, rows):
            n, where = export_mlflow(home.root, info, client, rows, tracking_uri=args.output,
                                     experiment=args.experiment)
        print(f"logged {n} records to {where}")
        return 0
    rows, fig = ledger_figures(home, info, args.redis_url)
    # the ledger's columns, then the figures every view shows (figures.export_columns)
    extra = pa.schema([("outcome", pa.string()), ("on_best", pa.bool_()), ("best_step", pa.int64()),
                       ("commit_val_bpb", pa.float64()), ("commit_samples", pa.int64())])
    rows = [{**r, **x} for r, x in zip(rows, export_columns(rows, fig, _on_best(home)))]
    ext = {"parquet": "parquet", "tsv": "tsv", "json": "json"}[args.format]
    out = Path(args.output) if args.output else home.snapshots_dir / f"ledger.{ext}"
    if args.output == "-":
        (write_tsv_rows if args.format == "tsv" else write_json_rows)(rows, sys.stdout, extra)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    {"parquet": write_parquet_rows, "tsv": write_tsv_rows, "json": write_json_rows}[args.format](rows, out, extra)
    print(f"wrote {len(rows)} records to {out}")
    return 0
