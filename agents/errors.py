"""The agent's short exception hierarchy; each message is one line naming what is wrong."""
from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agents package raises on purpose."""


class ProgramError(AgentError):
    """A research program (Markdown + optional YAML block) is malformed."""


class InvalidEdit(AgentError):
    """A proposed edit cannot be used: it does not apply, touches a locked file, does not
    compile, or is too large. The message becomes the record's `reason`."""


class SpendingCapReached(AgentError):
    """The agent's LLM spending cap is used up: the agent stops cleanly."""


class WorktreeError(AgentError):
    """A git operation on the agent's worktree failed."""
