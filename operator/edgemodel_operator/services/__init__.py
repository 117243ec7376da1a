"""Use cases: one idempotent reconcile, observe -> decide -> act."""
