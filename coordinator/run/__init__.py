"""Runs in the user's terminal (`swarm run`): the config, the plan, the supervisor of Ray, redis
and agents, the live view."""
