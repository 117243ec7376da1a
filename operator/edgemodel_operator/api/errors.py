"""Errors of the API layer."""


class InvalidSpec(ValueError):
    """The spec cannot be acted on; the message says which field and why, for a person."""
