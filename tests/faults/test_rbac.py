"""Scenario 4: the operator's ServiceAccount loses its ClusterRoleBinding mid-run (someone
"tidies up" RBAC), then gets it back. The operator runs with exactly the chart's rules."""

from __future__ import annotations

import json
import os
import time

import pytest
from clusterkit import wait_until
from kit import RELEASE, Site, duplicates, promoted, serves

V1, V2 = "registry.local/detector:1.0", "registry.local/detector:1.1"


@pytest.mark.scenario(
    "4",
    "RBAC revoked mid-run and restored",
    "while the binding is gone the operator keeps running, its log names each forbidden "
    "call and edgemodel_reconcile_errors_total counts them (reason Forbidden); restored, it "
    "resumes by itself and promotes the change made meanwhile; no duplicate Events",
)
def test_rbac_revoked_and_restored(site: Site, start: object) -> None:
    proxy = site.cluster.proxy()
    # Watches end every 20 s, so each one reconnects, and is refused, while RBAC is gone.
    op = start(proxy, EDGEMODEL_WATCH_TIMEOUT_SECONDS="20")  # type: ignore[operator]
    site.apply(site.edgemodel("detector", V1))
    site.wait("detector", promoted, 60, "v1 promoted")
    binding = json.loads(site.cluster.kubectl("get", "clusterrolebinding", f"{RELEASE}-"
                                              "edgemodel-operator", "-o", "json"))  # fmt: skip
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        binding["metadata"].pop(key, None)
    try:
        site.cluster.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"])
        revoked_at = time.time()
        site.apply(site.edgemodel("detector", V2, version="1.1.0"))

        def forbidden_logged() -> list[str]:
            return [
                str(r.get("event"))
                for r in op.logs()  # type: ignore[attr-defined]
                if "forbidden" in json.dumps(r).lower()
            ]

        logged = wait_until(forbidden_logged, timeout=40, what="a forbidden call in the log")
        assert any("edgemodel-operator" in line or "forbidden" in line.lower() for line in logged)
        assert op.alive()  # type: ignore[attr-defined]
        errors = wait_until(
            lambda: op.metric("edgemodel_reconcile_errors_total", reason="Forbidden"),  # type: ignore[attr-defined]
            timeout=40,
            what="edgemodel_reconcile_errors_total{reason=Forbidden}",
        )
        assert errors >= 1

        def refused_watches() -> set[str]:
            return {e.target.split("?")[0] for e in proxy.log
                    if e.watch and e.at > revoked_at and e.outcome == "forwarded 403"}  # fmt: skip

        watched = {e.target.split("?")[0] for e in proxy.log if e.watch}
        wait_until(lambda: refused_watches() >= watched, timeout=60,
                   what=f"every watch ({len(watched)}) to be refused")  # fmt: skip
        time.sleep(float(os.environ.get("FAULTS_RBAC_SECONDS", "5")))  # refused a while longer
    finally:  # the rest of the suite runs with these rights
        site.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    restored_at = time.time()
    done = site.wait(
        "detector",
        lambda e: promoted(e) and serves(site, "detector", e["status"]["revision"], V2),
        90,
        "v1.1.0 promoted after the binding came back",
    )
    assert op.alive()  # type: ignore[attr-defined]
    events = site.events("detector")
    assert not duplicates(events), site.timeline("detector")
    assert not done["status"].get("failedRevisions")
    print(f"revoked for {restored_at - revoked_at:.0f}s; recovered after "
          f"{time.time() - restored_at:.0f}s")  # fmt: skip
