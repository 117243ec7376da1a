"""kopf's network settings, set from the configuration rather than left to the defaults of
whichever kopf is installed: every request kopf makes has a deadline, and a watch that
stays silent (no event, not even a bookmark) is taken for dead and reopened."""

from __future__ import annotations

import kopf

from edgemodel_operator.config import ApiTimeouts


def apply_timeouts(settings: kopf.OperatorSettings, api: ApiTimeouts) -> None:
    settings.networking.request_timeout = api.request
    settings.networking.connect_timeout = api.connect
    settings.watching.connect_timeout = api.connect
    settings.watching.server_timeout = round(api.watch)  # timeoutSeconds: an integer
    # The client gives the server's own end of a watch a request's time to arrive.
    settings.watching.client_timeout = api.watch + api.request
    settings.watching.inactivity_timeout = api.watch_inactivity
