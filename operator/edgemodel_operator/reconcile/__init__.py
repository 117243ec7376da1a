"""Pure decision functions: placement, desired workloads, drift, revision and status."""
