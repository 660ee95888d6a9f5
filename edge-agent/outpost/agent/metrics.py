"""Prometheus metrics of the agent, in a registry of its own (several agents per process in tests).

``outpost agent run`` serves ``registry`` over HTTP with prometheus_client's own server.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from outpost.agent.observed import Observed

__all__ = ["AgentMetrics"]


class AgentMetrics:
    """Modules by state, restarts, reconcile duration, image pull time, deployment results."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.modules = Gauge("outpost_agent_modules", "Modules by runtime state.", ["state"], registry=self.registry)
        self.restarts = Counter("outpost_agent_restarts", "Module restarts made by the agent.", registry=self.registry)
        self.reconcile_seconds = Histogram(
            "outpost_agent_reconcile_seconds",
            "Duration of one observe-plan-run round.",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.pull_seconds = Histogram(
            "outpost_agent_pull_seconds",
            "Time spent pulling images per round that pulled.",
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.deployments = Counter(
            "outpost_agent_deployments", "Deployments applied, by result.", ["result"], registry=self.registry
        )

    def observe_round(self, *, seconds: float, pull_seconds: float, restarts: int, observed: Observed) -> None:
        self.reconcile_seconds.observe(seconds)
        if pull_seconds:
            self.pull_seconds.observe(pull_seconds)
        if restarts:
            self.restarts.inc(restarts)
        counts = Tally(state.state.value for state in observed.modules.values())
        for state in ("created", "running", "exited", "dead", "unknown"):
            self.modules.labels(state=state).set(counts.get(state, 0))
