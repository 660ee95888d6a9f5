"""Prometheus metrics of a fleet process's rollout driver, in the fleet's own registry (``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from outpost.fleet.rollout.plan import Decision

__all__ = ["RolloutMetrics"]


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds = Counter(
            "outpost_fleet_rollout_rounds", "Driver rounds this process ran as the leader.", registry=registry
        )
        self.leader = Gauge(
            "outpost_fleet_rollout_leader", "1 while this process holds the rollout driver's lease.", registry=registry
        )
        self.decisions = Counter(
            "outpost_fleet_rollout_decisions",
            "Rollout decisions by action (wait, advance, await-approval, rollback, promote).",
            ["action"],
            registry=registry,
        )

    def observe(self, leading: bool, decisions: list[Decision]) -> None:
        self.leader.set(1 if leading else 0)
        if leading:
            self.rounds.inc()
        for decision in decisions:
            self.decisions.labels(action=str(decision.action)).inc()
