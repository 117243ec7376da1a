"""kopf entry points: thin decorators that call the services."""
