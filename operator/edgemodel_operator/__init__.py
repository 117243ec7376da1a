"""EdgeModel operator: one EdgeModel resource, one optimized workload per accelerator."""

__version__ = "0.1.0"
