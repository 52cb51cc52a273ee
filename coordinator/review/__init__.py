"""Runs in the user's terminal after (or during) a swarm: lineage graph, status/export views, the HTML report."""
