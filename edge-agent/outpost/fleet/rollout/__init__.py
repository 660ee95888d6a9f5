"""A/B model rollouts: cohorts, gates, and the rollout's state machine over the fleet's deployments."""
