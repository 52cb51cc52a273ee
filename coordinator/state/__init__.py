"""The swarm's durable state, used by the actor and the terminal: ledger (redis), research repo
(git), SWARM_HOME, the embedded redis-server."""
