"""Experiment trackers: every ledger record logged to MLflow and/or W&B as it is decided.

`swarm run` starts a follower thread (follower.py) that reads the ledger stream from a cursor kept
in redis and hands each record, with its latest decision, to the configured writers
(mlflow_writer.py, wandb_writer.py); `swarm export --format mlflow` logs an existing swarm.
"""
