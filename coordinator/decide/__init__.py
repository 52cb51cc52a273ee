"""Runs inside the coordinator actor: decisions on reports, jobs, group commit, best moves."""
