"""Agent environments behind one protocol (:class:`steca_lib.envs.base.AgentEnv`)."""

from steca_lib.envs.base import AgentEnv, StepResult

__all__ = ["AgentEnv", "StepResult"]
