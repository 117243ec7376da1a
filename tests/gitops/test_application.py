"""One site driven from Git by a live Argo CD: an Application with the operator's chart and the
site's EdgeModels (sync waves put the CRD first), a commit with a broken version that the
operator rolls back, and the revert that brings the site back. The assertions read what
Argo CD itself recorded (every stored version of the Application, the sync operations its
controller counted) next to what the operator did in the cluster."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clusterkit import Cluster, OperatorProcess, wait_until
from gitopskit import (
    DEADLINE,
    RESYNC,
    RETRY,
    TIMINGS,
    ArgoCD,
    Recorder,
    Sample,
    SiteRepo,
    condition,
    create_namespace,
    dump,
    edgemodel,
    free_port,
    get_em,
    operation,
    operation_revisions,
    resource,
    revisions,
    self_heals,
    start_operator,
)

CRD_NAME = "edgemodels.edgeai.dev"
# SELF_HEAL_RACE: Argo CD compares an application with Git while a sync runs. When such a
# comparison (made before the sync applied everything, so OutOfSync) is processed after
# the sync ended, automated self-heal sees "synced to this commit, yet OutOfSync" and syncs
# the same commit once more at once (its first self-heal has no backoff). The next
# comparison says Synced and it stops there. The tests allow that one extra sync and check
# it changed nothing; anything beyond it would be a self-heal loop.


@dataclass
class Site:
    app: str  # the Application, also the Helm release
    models: str  # namespace of the site's EdgeModels
    system: str  # namespace the chart installs the operator into
    path: str  # folder of the site's EdgeModels in the site repository
    log: Path  # the operator's log
    operator: OperatorProcess | None = None  # started when the chart's pod would start

    def start_operator(self, cluster: Cluster) -> None:
        self.operator = start_operator(cluster, [self.models], self.log, free_port())


def application(argocd: ArgoCD, site: Site) -> dict[str, Any]:
    """The chart from the operator's repository and the EdgeModels from the site repository,
    in one Application. The chart's operator Deployment is pinned to a simulated node: pods
    here cannot reach the API server, so the test's operator runs as a host process instead
    and the chart's pod only has to become Available."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": site.app, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "sources": [
                {
                    "repoURL": argocd.repo("edgemodel-operator")["url"],
                    "targetRevision": "main",
                    "path": "charts/edgemodel-operator",
                    "helm": {
                        "releaseName": site.app,
                        "valuesObject": {
                            "watchNamespaces": [site.models],
                            "nodeSelector": {"type": "kwok"},
                            # Every target here names its own image; the chart needs a default.
                            "serverImage": "edgemodel-server:1.0.0-{accelerator}",
                        },
                    },
                },
                {
                    "repoURL": argocd.repo("sites")["url"],
                    "targetRevision": "main",
                    "path": site.path,
                },
            ],
            "destination": {"server": argocd.cluster_server, "namespace": site.system},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["ServerSideApply=true"],
                "retry": RETRY,
            },
            "ignoreDifferences": [
                {"group": "edgeai.dev", "kind": "EdgeModel", "jsonPointers": ["/status"]}
            ],
        },
    }


@pytest.fixture(scope="module")
def site(
    cluster: Cluster, argocd: ArgoCD, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    app = f"gitops-{uuid.uuid4().hex[:5]}"
    models, system = app, f"{app}-system"
    for ns in (models, system):
        create_namespace(cluster, ns)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    site = Site(app, models, system, f"sites/{app}/models", log)
    try:
        yield site
    finally:
        # No resources finalizer on the Application: deleting it leaves the chart's CRD,
        # which every other EdgeModel in the cluster needs. The rest is removed by hand.
        argocd.delete("applications", app)
        try:
            wait_until(lambda: not argocd.exists("applications", app), timeout=30,
                       what=f"Application {app} to be deleted")  # fmt: skip
        finally:
            cluster.delete_namespace(models)  # EdgeModels first, while their operator runs
            if site.operator:
                site.operator.stop()
            cluster.core.delete_namespace(system)
            for kind in ("clusterrolebinding", "clusterrole"):
                cluster.kubectl("delete", kind, "-l", f"app.kubernetes.io/instance={app}",
                                check=False)  # fmt: skip


def served(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.kubectl("get", "edgemodels.edgeai.dev", "-n", namespace)
    except AssertionError:
        return False
    return True


def chart_commit(argocd: ArgoCD) -> str:
    bare = argocd.repo("edgemodel-operator")["path"]
    return subprocess.run(
        ["git", "--git-dir", bare, "rev-parse", "main"], text=True, capture_output=True,
        check=True,
    ).stdout.strip()  # fmt: skip


def synced_to(app: dict[str, Any], commits: list[str], phase: str) -> bool:
    status = app.get("status", {})
    return (
        status.get("sync", {}).get("status") == "Synced"
        and revisions(app) == commits
        and operation_revisions(app) == commits
        and operation(app).get("phase") == phase
    )


@dataclass
class FirstSync:
    commits: list[str]
    app: dict[str, Any]
    samples: list[Sample]
    crd_existed: bool
    seconds: float


@pytest.fixture(scope="module")
def first_sync(cluster: Cluster, argocd: ArgoCD, site: Site, site_repo: SiteRepo) -> FirstSync:
    for name in ("digits", "detector"):
        site_repo.write(f"{site.path}/{name}.yaml", edgemodel(name, site.models, "1.0.0"))
    commit = site_repo.commit(f"{site.app}: digits and detector 1.0.0")
    crd_existed = cluster.kubectl("get", "crd", CRD_NAME, check=False).startswith("NAME")
    commits = [chart_commit(argocd), commit]
    recorder = Recorder(argocd, site.app)
    t0 = time.monotonic()
    argocd.create("applications", application(argocd, site))
    # The host-process operator stands in for the chart's pod, so it starts when that pod
    # would: once Argo CD has created the chart's Deployment (in wave 0, after the CRD) and
    # the EdgeModel API is served. (Started before its CRD is served, the operator would
    # not notice the CRD later: kopf gives up on it once the CRD's events are over.)
    wait_until(
        lambda: cluster.apps.list_namespaced_deployment(site.system).items,
        timeout=60,
        what="Argo CD to create the chart's Deployment",
    )
    wait_until(lambda: served(cluster, site.models), timeout=60,
               what="the EdgeModel API to be served")  # fmt: skip
    site.start_operator(cluster)

    def healthy_only_when_ready(live: dict[str, Any]) -> bool:
        status = live.get("status", {})
        healthy = status.get("health", {}).get("status") == "Healthy"
        # Argo CD leaves resources not created yet out of the health (OutOfSync says they
        # are missing); once everything is synced, Healthy must mean every EdgeModel Ready
        # and promoted (its stabilization window passed).
        if healthy and status.get("sync", {}).get("status") == "Synced":
            for name in ("digits", "detector"):
                em = get_em(cluster, site.models, name)
                assert condition(em, "Ready").get("status") == "True", dump(em)
                assert em["status"].get("stableRevision") == em["status"]["revision"], dump(em)
        return healthy and synced_to(live, commits, "Succeeded")

    try:
        live = recorder.until(healthy_only_when_ready, timeout=180, what="the first sync, Healthy")
    finally:
        recorder.stop()
    seconds = time.monotonic() - t0
    TIMINGS.append(("Application created -> Synced and Healthy", seconds))
    return FirstSync(commits, live, recorder.samples, crd_existed, seconds)


def applied(app: dict[str, Any]) -> list[tuple[str, str]]:
    """The resources a sync operation has applied so far, in Argo CD's order."""
    result = operation(app).get("syncResult") or {}
    return [(r["kind"], r["name"]) for r in result.get("resources", [])]


def test_application_installs_the_chart_then_the_edgemodels_and_turns_healthy(
    cluster: Cluster, argocd: ArgoCD, site: Site, first_sync: FirstSync
) -> None:
    app = first_sync.app
    # Sync waves: the chart (with the CRD) is wave 0, the EdgeModels wave 1.
    crd = resource(app, "CustomResourceDefinition", CRD_NAME)
    assert crd.get("syncWave", 0) == 0 and crd["health"]["status"] == "Healthy", crd
    deployment = resource(app, "Deployment", f"{site.app}-edgemodel-operator")
    assert deployment["health"]["status"] == "Healthy", deployment
    for name in ("digits", "detector"):
        em = resource(app, "EdgeModel", name)
        assert em["syncWave"] == 1 and em["status"] == "Synced", em
        # The project's health check, run by Argo CD on the live object.
        assert em["health"] == {"status": "Healthy", "message": "All 1 targets are ready"}, em

    # The first sync operation, as it progressed: wave 0 (the CRD among the chart's
    # resources) applied and waited on until healthy, and only then wave 1, the EdgeModels.
    first = min(filter(None, (operation(s.app).get("startedAt") for s in first_sync.samples)))
    first_op = [s.app for s in first_sync.samples if operation(s.app).get("startedAt") == first]
    ems = {("EdgeModel", "digits"), ("EdgeModel", "detector")}
    crd_key = ("CustomResourceDefinition", CRD_NAME)
    between = [a for a in first_op if crd_key in applied(a) and not ems & set(applied(a))]
    assert between, [(operation(a).get("message"), applied(a)) for a in first_op]
    assert "waiting for healthy state" in operation(between[-1])["message"], dump(between[-1])
    done = applied(first_op[-1])
    assert operation(first_op[-1])["phase"] == "Succeeded", dump(operation(first_op[-1]))
    assert done.index(("CustomResourceDefinition", CRD_NAME)) < min(map(done.index, ems)), done

    # No retry for want of the CRD; at most one more sync, a self-heal that Argo CD starts
    # when a comparison made while the sync ran ends after it (see SELF_HEAL_RACE).
    op = operation(app)
    assert op.get("retryCount", 0) == 0, dump(op)
    assert argocd.sync_operations(site.app) == {"Succeeded": 1 + self_heals(app)}
    assert self_heals(app) <= 1, dump(op)
    crd_live = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json"))
    established = next(c for c in crd_live["status"]["conditions"] if c["type"] == "Established")
    for name in ("digits", "detector"):
        em = get_em(cluster, site.models, name)
        assert em["metadata"]["creationTimestamp"] >= established["lastTransitionTime"]
        assert condition(em, "Ready")["status"] == "True"
        assert em["spec"]["targets"][0]["nodeSelector"] == {"type": "kwok"}
    # Health went through Progressing (EdgeModels rolling out) before Healthy.
    healths = [s.health for s in first_sync.samples]
    assert "Progressing" in healths, healths
    # The chart's operator pod sits on a simulated node, as the Application asks.
    pods = cluster.core.list_namespaced_pod(site.system).items
    assert pods and all(p.spec.node_selector == {"type": "kwok"} for p in pods)
    TIMINGS.append((f"first sync: {1 + self_heals(app)} sync(s), {self_heals(app)} self-heal; "
                    f"CRD existed before: {first_sync.crd_existed}", 0.0))  # fmt: skip


@dataclass
class BrokenCommit:
    commit: str
    good_revision: str
    bad_revision: str
    generation_before: int
    samples: list[Sample]
    operations_before: int
    operations_after: int


@pytest.fixture(scope="module")
def broken_commit(
    cluster: Cluster, argocd: ArgoCD, site: Site, site_repo: SiteRepo, first_sync: FirstSync
) -> BrokenCommit:
    # The version to go back to: promoted once Ready for the stabilization window.
    live_em = wait_until(
        lambda: (
            (em := get_em(cluster, site.models, "digits"))["status"].get("stableRevision")
            == em["status"]["revision"]
            and em
        ),
        timeout=60,
        what="digits 1.0.0 to be promoted to the stable revision",
    )
    good, generation = live_em["status"]["stableRevision"], live_em["metadata"]["generation"]
    before = sum(argocd.sync_operations(site.app).values())
    recorder = Recorder(argocd, site.app)
    site_repo.write(f"{site.path}/digits.yaml",
                    edgemodel("digits", site.models, "1.1.0", broken=True))  # fmt: skip
    commit = site_repo.commit(f"{site.app}: digits 1.1.0")
    t0 = time.monotonic()
    argocd.refresh(site.app)
    commits = [first_sync.commits[0], commit]
    try:
        wait_until(
            lambda: (
                condition(get_em(cluster, site.models, "digits"), "RolledBack").get("status")
                == "True"
            ),
            timeout=DEADLINE + 60,
            what="the operator to roll digits back",
        )
        TIMINGS.append(("broken commit pushed -> operator rolled back", time.monotonic() - t0))
        recorder.until(
            lambda app: (
                operation_revisions(app) == commits
                and operation(app).get("phase") in ("Succeeded", "Failed", "Error")
                and app["status"]["health"]["status"] == "Degraded"
            ),
            timeout=60,
            what="Argo CD to show the broken commit synced and Degraded",
        )
        TIMINGS.append(("broken commit pushed -> Argo CD shows Degraded", time.monotonic() - t0))
        after = sum(argocd.sync_operations(site.app).values())
        # Then watch for a while, with hard refreshes: Argo CD compares again and again.
        for _ in range(3):
            argocd.refresh(site.app)
            time.sleep(4 * RESYNC)
    finally:
        recorder.stop()
    bad = get_em(cluster, site.models, "digits")["status"]["revision"]
    return BrokenCommit(commit, good, bad, generation, recorder.samples, before, after)


def test_broken_version_is_rolled_back_and_argocd_shows_degraded_and_stays_synced(
    cluster: Cluster, argocd: ArgoCD, site: Site, first_sync: FirstSync,
    broken_commit: BrokenCommit,
) -> None:  # fmt: skip
    app = argocd.app(site.app)
    em = get_em(cluster, site.models, "digits")
    # The operator rolled back: the stable revision serves, the failed one is recorded.
    assert em["status"]["stableRevision"] == broken_commit.good_revision != em["status"]["revision"]
    assert [f["revision"] for f in em["status"]["failedRevisions"]] == [broken_commit.bad_revision]
    image = cluster.apps.read_namespaced_deployment("digits-cpu", site.models)
    assert image.spec.template.spec.containers[0].image == "edgemodel-server:1.0.0-cpu"

    # Argo CD shows the application Degraded with the operator's own message ...
    assert app["status"]["health"]["status"] == "Degraded", dump(app["status"]["health"])
    degraded = condition(em, "Degraded")
    assert degraded["reason"] == "RolledBack"
    shown = resource(app, "EdgeModel", "digits")["health"]
    assert shown == {"status": "Degraded", "message": f"RolledBack: {degraded['message']}"}
    assert f"Revision {broken_commit.bad_revision} failed" in shown["message"]
    assert resource(app, "EdgeModel", "detector")["health"]["status"] == "Healthy"

    # ... and stays Synced: Git asks for 1.1.0 and the live spec is 1.1.0; the operator
    # never writes spec, so there is nothing for self-heal to undo.
    commits = [first_sync.commits[0], broken_commit.commit]
    samples = broken_commit.samples
    first = next(i for i, s in enumerate(samples) if s.revisions == commits and s.sync == "Synced")
    assert all(s.sync == "Synced" and s.revisions == commits for s in samples[first:]), [
        (round(s.at - samples[0].at, 1), s.sync, s.health, s.phase) for s in samples[first:]
    ]
    assert em["spec"]["targets"][0]["image"] == "edgemodel-server:1.1.0-never-ready"
    assert resource(app, "EdgeModel", "digits")["status"] == "Synced"

    # Count the syncs: one operation for the commit, Succeeded (Argo CD waits for health
    # between waves, not after the last one; Degraded afterwards is the application's
    # health, not a failed sync, so nothing is retried). None after it, though Argo CD
    # compared the application with Git again and again.
    op = operation(app)
    synced = broken_commit.operations_after - broken_commit.operations_before
    assert op["phase"] == "Succeeded" and op.get("retryCount", 0) == 0, dump(op)
    assert synced == 1 + self_heals(app) <= 2, dump(op)
    # A self-heal re-applies what Git holds: the spec changed once, for the commit.
    assert em["metadata"]["generation"] == broken_commit.generation_before + 1
    assert sum(argocd.sync_operations(site.app).values()) == broken_commit.operations_after
    seen = {operation(s.app).get("startedAt") for s in samples
            if operation_revisions(s.app) == commits}  # fmt: skip
    assert len(seen) == synced, seen  # every operation, as the watch saw them
    assert app["status"]["reconciledAt"] > op["finishedAt"], dump(app["status"])
    quiet = samples[-1].at - samples[first].at
    heals = self_heals(app)
    TIMINGS.append((f"broken commit: {synced} sync(s), {heals} of them self-heal; none in "
                    f"{quiet:.0f}s Synced/Degraded", 0.0))  # fmt: skip


def test_revert_commit_turns_healthy_and_the_failed_version_was_not_retried(
    cluster: Cluster, argocd: ArgoCD, site: Site, site_repo: SiteRepo, first_sync: FirstSync,
    broken_commit: BrokenCommit,
) -> None:  # fmt: skip
    # Until the revert, the operator held the failed revision: no second attempt.
    em = get_em(cluster, site.models, "digits")
    assert len(em["status"]["failedRevisions"]) == 1
    events = cluster.core.list_namespaced_event(
        site.models, field_selector="involvedObject.name=digits,involvedObject.kind=EdgeModel"
    ).items
    assert [e.reason for e in events].count("RolledBack") == 1
    replicasets = cluster.apps.list_namespaced_replica_set(site.models).items
    bad = [rs for rs in replicasets if "never-ready" in rs.spec.template.spec.containers[0].image]
    assert len(bad) == 1 and bad[0].spec.replicas == 0, [rs.spec.replicas for rs in bad]

    before = sum(argocd.sync_operations(site.app).values())
    recorder = Recorder(argocd, site.app)
    commit = site_repo.revert(broken_commit.commit)
    t0 = time.monotonic()
    argocd.refresh(site.app)
    commits = [first_sync.commits[0], commit]
    try:
        recorder.until(
            lambda a: (
                synced_to(a, commits, "Succeeded") and a["status"]["health"]["status"] == "Healthy"
            ),
            timeout=90,
            what="the revert to sync and turn Healthy",
        )
        TIMINGS.append(("revert pushed -> Synced and Healthy", time.monotonic() - t0))
        argocd.refresh(site.app)  # one more comparison, then count
        time.sleep(2 * RESYNC)
    finally:
        recorder.stop()
    app = argocd.app(site.app)
    assert app["status"]["health"]["status"] == "Healthy" and synced_to(app, commits, "Succeeded")
    assert resource(app, "EdgeModel", "digits")["health"]["status"] == "Healthy"
    em = get_em(cluster, site.models, "digits")
    # Back to the revision that was stable all along.
    assert em["status"]["revision"] == broken_commit.good_revision == em["status"]["stableRevision"]
    assert condition(em, "Ready")["status"] == "True"
    assert condition(em, "Degraded")["status"] == "False"
    image = cluster.apps.read_namespaced_deployment("digits-cpu", site.models)
    assert image.spec.template.spec.containers[0].image == "edgemodel-server:1.0.0-cpu"
    synced = sum(argocd.sync_operations(site.app).values()) - before
    assert synced == 1 + self_heals(app) <= 2, dump(operation(app))
    # History lists every successful sync: the first commit, the broken one, the revert
    # (each once, or twice with a self-heal).
    history = [h["revisions"][1] for h in app["status"]["history"]]
    assert list(dict.fromkeys(history)) == [first_sync.commits[1], broken_commit.commit, commit]
    TIMINGS.append((f"revert: {synced} sync(s), {self_heals(app)} self-heal", 0.0))
