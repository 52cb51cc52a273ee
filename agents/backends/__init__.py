"""Proposal backends: one small interface (base.Backend), three built-ins registered in base."""
