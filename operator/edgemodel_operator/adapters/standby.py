"""What the operator does before kopf starts: wait until the EdgeModel CRD is served (kopf
only looks for resources when it starts and when a CRD changes, and a CRD's events may all
come before the API server serves it: an operator started first would never serve
EdgeModels), and answer the liveness probe meanwhile, so that a replica standing by or
waiting for the CRD is not restarted for it."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import structlog
from kubernetes import client, config

from edgemodel_operator.adapters.rest import Rest

LOG = structlog.get_logger("edgemodel_operator.standby")


def served(api: client.ApiClient, group: str, version: str, plural: str,
           timeout: tuple[float, float]) -> bool:  # fmt: skip
    """Whether the API server's discovery lists the resource (what kopf looks up)."""
    try:
        found = Rest(api, timeout).json("GET", f"/apis/{group}/{version}")
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(r.get("name") == plural for r in found.get("resources") or [])


def wait_until_served(
    api: client.ApiClient, group: str, version: str, plural: str,
    timeout: tuple[float, float], every: float = 2.0,
) -> None:  # fmt: skip
    """Block until discovery serves the resource; say so every 30 s while it does not."""
    said = 0.0
    while True:
        try:
            if served(api, group, version, plural, timeout):
                return
            why = "it is not served yet: install the CRD (crds/ or the Helm chart)"
        except Exception as err:  # unreachable, forbidden, timed out: keep asking
            why = f"the API server did not answer: {err}"
        if time.monotonic() - said >= 30:
            LOG.warning(f"Waiting for {plural}.{group}/{version} before starting: {why}")
            said = time.monotonic()
        time.sleep(every)


def serve_health(address: str) -> ThreadingHTTPServer:
    """/healthz answering 200 until shutdown(): the process is alive and waiting."""
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz"
            body = b'{"waiting": true}' if ok else b""
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server


def api_client() -> client.ApiClient:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()
