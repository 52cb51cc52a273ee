"""Proposal backends: one small interface (base.Backend); each module here is a built-in that
registers itself with its config model (base.register_backend), as a user's plugin would."""
