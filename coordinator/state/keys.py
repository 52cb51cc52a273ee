"""The swarm's redis key names, in one place: every reader and writer of redis spells them here."""
from __future__ import annotations


def prefix(swarm_id: str) -> str:
    """Every key of one swarm starts with this."""
    return f"swarm:{swarm_id}:"


def ledger_key(swarm_id: str, name: str) -> str:
    """The ledger's keys: `ledger` (the append-only stream), the hashes `started`, `records`,
    `decisions`, `jobs` (lease bookkeeping) and `agents` (heartbeats)."""
    return prefix(swarm_id) + name


def agents(swarm_id: str) -> str:
    """Hash: agent name -> its latest heartbeat (JSON)."""
    return ledger_key(swarm_id, "agents")


def best(swarm_id: str, hw: str) -> str:
    """String: the latest Broadcast (JSON) of a hardware class."""
    return f"{best_prefix(swarm_id)}{hw}"


def best_prefix(swarm_id: str) -> str:
    """What every best key starts with (for SCAN)."""
    return prefix(swarm_id) + "best:"


def best_seq(swarm_id: str, hw: str) -> str:
    """Counter: the last Broadcast.seq handed out for a hardware class."""
    return prefix(swarm_id) + f"bestseq:{hw}"


def tracker(swarm_id: str, destination: str, what: str) -> str:
    """An experiment tracker's follower state (coordinator/track/follower.py) per destination:
    `cursor` (string: the last ledger stream id it handled) and `logged` (hash: experiment id ->
    digest of what the tracker holds for it)."""
    return prefix(swarm_id) + f"tracker:{destination}:{what}"


def allocation(swarm_id: str) -> str:
    """Hash: agent name -> its latest reassignment (JSON, decide/allocation.py's Assignment); each
    one is also an `allocation` event of the ledger stream, which the hash is rebuilt from."""
    return ledger_key(swarm_id, "allocation")


def allocation_spec(swarm_id: str) -> str:
    """String: the allocation's settings and programs (JSON, decide/allocation.py's
    AllocationSpec), so a restarted coordinator allocates as before."""
    return prefix(swarm_id) + "allocation-spec"
