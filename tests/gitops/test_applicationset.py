"""A fleet of sites from one ApplicationSet: one Application per site (sites are namespaces
here), rolled out site by site with Argo CD's RollingSync. A canary site takes each commit
first; the other sites follow only once the canary's Application is Healthy, which the
EdgeModel health check makes mean "the operator promoted the new version"."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from clusterkit import Cluster, OperatorProcess, wait_until
from gitopskit import (
    RETRY,
    ROOT,
    TIMINGS,
    ArgoCD,
    SiteRepo,
    condition,
    create_namespace,
    dump,
    edgemodel,
    free_port,
    get_em,
    operation,
    revisions,
    start_operator,
)
from kubernetes import client

# The canary takes each new commit first (step 1), the other two sites after it (step 2).
STEPS = {"canary": "1", "east": "2", "west": "2"}
STEP_LABEL = "edgeai.dev/rollout-step"


@dataclass
class Fleet:
    name: str  # the ApplicationSet
    operator: OperatorProcess
    namespaces: dict[str, str] = field(default_factory=dict)  # site -> namespace

    def app(self, site: str) -> str:
        return self.namespaces[site]  # each site's Application is named after its namespace

    def path(self, site: str) -> str:
        return f"sites/{self.namespaces[site]}/models"


def applicationset(argocd: ArgoCD, fleet: Fleet) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": fleet.name, "namespace": "argocd"},
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [
                {
                    "list": {
                        "elements": [
                            {"namespace": fleet.namespaces[site], "step": step}
                            for site, step in STEPS.items()
                        ]
                    }
                }
            ],
            # Deleting the ApplicationSet (or a site leaving it) leaves that site's
            # EdgeModels running: no resources finalizer on the generated Applications.
            "syncPolicy": {"preserveResourcesOnDeletion": True},
            "strategy": {
                "type": "RollingSync",
                "rollingSync": {
                    "steps": [
                        {
                            "matchExpressions": [
                                {"key": STEP_LABEL, "operator": "In", "values": [step]}
                            ]
                        }
                        for step in sorted(set(STEPS.values()))
                    ]
                },
            },
            "template": {
                "metadata": {"name": "{{ .namespace }}", "labels": {STEP_LABEL: "{{ .step }}"}},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": argocd.repo("sites")["url"],
                        "targetRevision": "main",
                        "path": "sites/{{ .namespace }}/models",
                    },
                    "destination": {
                        "server": argocd.cluster_server,
                        "namespace": "{{ .namespace }}",
                    },
                    # No automated sync: RollingSync starts each site's sync itself.
                    "syncPolicy": {"syncOptions": ["ServerSideApply=true"], "retry": RETRY},
                    "ignoreDifferences": [
                        {"group": "edgeai.dev", "kind": "EdgeModel", "jsonPointers": ["/status"]}
                    ],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def fleet(
    cluster: Cluster, argocd: ArgoCD, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    # The sites' Applications hold only EdgeModels; the CRD comes with the operator.
    crd = ROOT / "crds" / "edgemodels.edgeai.dev.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/edgemodels.edgeai.dev")  # fmt: skip
    name = f"gitops-fleet-{uuid.uuid4().hex[:5]}"
    namespaces = {site: f"{name}-{site}" for site in STEPS}
    for ns in namespaces.values():
        create_namespace(cluster, ns)
    operator = start_operator(
        cluster, list(namespaces.values()),
        tmp_path_factory.mktemp("operator") / "operator.log", free_port(),
    )  # fmt: skip
    try:
        yield Fleet(name, operator, namespaces)
    finally:
        # The generated Applications are owned by the ApplicationSet and carry no resources
        # finalizer: they go with it, and leave the EdgeModels to the namespace deletion.
        argocd.delete("applicationsets", name)
        try:
            wait_until(
                lambda: not any(argocd.exists("applications", n) for n in namespaces.values()),
                timeout=60,
                what="the fleet's Applications to be deleted",
            )
        finally:
            for ns in namespaces.values():
                cluster.delete_namespace(ns)
            operator.stop()


def commit_all(site_repo: SiteRepo, fleet: Fleet, version: str, broken: bool = False) -> str:
    for site, ns in fleet.namespaces.items():
        site_repo.write(f"{fleet.path(site)}/digits.yaml",
                        edgemodel("digits", ns, version, broken=broken))  # fmt: skip
    return site_repo.commit(f"{fleet.name}: digits {version} on every site")


@dataclass
class Observation:
    at: float
    version: dict[str, str]  # site -> spec.model.version of its EdgeModel
    promoted: dict[str, bool]  # site -> the spec's revision is the stable one, Ready
    app: dict[str, dict[str, Any]]


def observe(cluster: Cluster, argocd: ArgoCD, fleet: Fleet) -> Observation:
    version, promoted, apps = {}, {}, {}
    for site, ns in fleet.namespaces.items():
        apps[site] = argocd.app(fleet.app(site))
        try:
            em = get_em(cluster, ns, "digits")
        except client.ApiException as err:
            if err.status != 404:
                raise
            em = {"spec": {"model": {"version": ""}}, "metadata": {}}  # not synced there yet
        status = em.get("status", {})
        version[site] = em["spec"]["model"]["version"]
        promoted[site] = (
            status.get("observedGeneration") == em["metadata"].get("generation", -1)
            and status.get("stableRevision") == status.get("revision")
            and condition(em, "Ready").get("status") == "True"
        )
    return Observation(time.monotonic(), version, promoted, apps)


def healthy_at(app: dict[str, Any], commit: str) -> bool:
    status = app.get("status", {})
    return (
        revisions(app) == [commit]
        and status.get("sync", {}).get("status") == "Synced"
        and status.get("health", {}).get("status") == "Healthy"
        and operation(app).get("phase") == "Succeeded"
    )


def roll(
    cluster: Cluster, argocd: ArgoCD, fleet: Fleet, commit: str, timeout: float
) -> list[Observation]:
    """Hard-refresh every site's Application, then observe until each is Healthy at commit."""
    for site in STEPS:
        argocd.refresh(fleet.app(site))
    seen: list[Observation] = []

    def done() -> bool:
        seen.append(observe(cluster, argocd, fleet))
        return all(healthy_at(app, commit) for app in seen[-1].app.values())

    wait_until(done, timeout=timeout, what=f"every site Healthy at {commit[:8]}", every=0.3)
    return seen


@pytest.fixture(scope="module")
def first_rollout(cluster: Cluster, argocd: ArgoCD, fleet: Fleet, site_repo: SiteRepo) -> str:
    commit = commit_all(site_repo, fleet, "1.0.0")
    argocd.create("applicationsets", applicationset(argocd, fleet))
    wait_until(
        lambda: all(argocd.exists("applications", fleet.app(s)) for s in STEPS),
        timeout=60,
        what="the ApplicationSet to generate one Application per site",
    )
    t0 = time.monotonic()
    roll(cluster, argocd, fleet, commit, timeout=180)
    TIMINGS.append(("ApplicationSet: 3 sites Healthy at the first commit", time.monotonic() - t0))
    return commit


def operations(argocd: ArgoCD, fleet: Fleet) -> dict[str, dict[str, int]]:
    """Ended sync operations per site, by phase."""
    return {site: argocd.sync_operations(fleet.app(site)) for site in STEPS}


def generations(cluster: Cluster, fleet: Fleet) -> dict[str, int]:
    return {site: int(get_em(cluster, ns, "digits")["metadata"]["generation"])
            for site, ns in fleet.namespaces.items()}  # fmt: skip


def test_applicationset_rolls_a_new_version_out_site_by_site(
    cluster: Cluster, argocd: ArgoCD, fleet: Fleet, site_repo: SiteRepo, first_rollout: str
) -> None:
    for site in STEPS:
        app = argocd.app(fleet.app(site))
        assert app["metadata"]["labels"][STEP_LABEL] == STEPS[site]
        assert app["spec"]["destination"]["namespace"] == fleet.namespaces[site]
        assert "automated" not in app["spec"].get("syncPolicy", {}), dump(app["spec"])
    before, generation = operations(argocd, fleet), generations(cluster, fleet)

    commit = commit_all(site_repo, fleet, "1.1.0")
    t0 = time.monotonic()
    seen = roll(cluster, argocd, fleet, commit, timeout=240)
    TIMINGS.append(("ApplicationSet: 1.1.0 rolled over 3 sites", time.monotonic() - t0))

    # Site by site: no site of step 2 had the new version before the canary's Application
    # was Healthy at the new commit, with the canary's EdgeModel promoted.
    canary_healthy = next(i for i, o in enumerate(seen) if healthy_at(o.app["canary"], commit))
    assert seen[canary_healthy].promoted["canary"]
    for obs in seen[:canary_healthy]:
        assert obs.version["east"] == obs.version["west"] == "1.0.0", obs.version
    # And the canary really went first: it was seen on 1.1.0 while the others were not.
    assert any(o.version == {"canary": "1.1.0", "east": "1.0.0", "west": "1.0.0"} for o in seen)
    final = seen[-1]
    # The same order in what Argo CD recorded: the other sites' first sync of the commit
    # started no earlier than the canary turned Healthy (both to the second).
    canary_healthy_since = final.app["canary"]["status"]["health"]["lastTransitionTime"]
    for site in ("east", "west"):
        history = final.app[site]["status"]["history"]
        started = min(h["deployStartedAt"] for h in history if h["revision"] == commit)
        assert started >= canary_healthy_since, (site, started, canary_healthy_since)

    assert all(final.promoted.values()) and set(final.version.values()) == {"1.1.0"}
    # Syncs, started by RollingSync: all succeeded, and together they changed each site's
    # EdgeModel once. (RollingSync may start the same sync a few times in a row: it acts on
    # its view of an Application from before the last sync's result was compared. Each
    # repeat applies the same commit again and changes nothing.) Once every site is
    # Healthy, no more syncs, however often Argo CD compares.
    after = operations(argocd, fleet)
    synced = {}
    for site in STEPS:
        assert set(after[site]) == {"Succeeded"}, after
        synced[site] = after[site]["Succeeded"] - before[site].get("Succeeded", 0)
        assert synced[site] >= 1, synced
    assert generations(cluster, fleet) == {s: g + 1 for s, g in generation.items()}
    for _ in range(2):
        for site in STEPS:
            argocd.refresh(fleet.app(site))
        time.sleep(3)
    assert operations(argocd, fleet) == after
    TIMINGS.append((f"ApplicationSet: syncs per site for 1.1.0: {synced}", 0.0))
    appset = argocd.custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applicationsets", fleet.name
    )
    statuses = {s["application"]: s for s in appset["status"]["applicationStatus"]}
    for site, step in STEPS.items():
        entry = statuses[fleet.app(site)]
        assert entry["status"] == "Healthy" and entry["step"] == step, entry
        assert entry.get("targetRevisions") == [commit], entry


def test_applicationset_stops_at_the_canary_when_the_new_version_fails(
    cluster: Cluster, argocd: ArgoCD, fleet: Fleet, site_repo: SiteRepo, first_rollout: str
) -> None:
    stable = {s: get_em(cluster, ns, "digits")["spec"]["model"]["version"]
              for s, ns in fleet.namespaces.items()}  # fmt: skip
    before = operations(argocd, fleet)
    commit = commit_all(site_repo, fleet, "1.2.0", broken=True)
    t0 = time.monotonic()
    for site in STEPS:
        argocd.refresh(fleet.app(site))
    canary_ns = fleet.namespaces["canary"]
    wait_until(
        lambda: (
            condition(get_em(cluster, canary_ns, "digits"), "RolledBack").get("status") == "True"
        ),
        timeout=90,
        what="the operator to roll the canary back",
    )
    canary = wait_until(
        lambda: (
            (a := argocd.app(fleet.app("canary")))["status"]["health"]["status"] == "Degraded"
            and operation(a).get("phase") == "Succeeded"
            and revisions(a) == [commit]
            and a
        ),
        timeout=60,
        what="the canary's Application synced to the broken commit and Degraded",
    )
    TIMINGS.append(("ApplicationSet: broken 1.2.0 stopped at the canary",
                    time.monotonic() - t0))  # fmt: skip
    assert revisions(canary) == [commit]
    # Then hold: the other sites never get the broken version, the rollout waits.
    end = time.monotonic() + 12
    while time.monotonic() < end:
        obs = observe(cluster, argocd, fleet)
        for site in ("east", "west"):
            assert obs.version[site] == stable[site], obs.version
            assert obs.promoted[site]
            assert obs.app[site]["status"]["sync"]["status"] == "OutOfSync"
            assert obs.app[site]["status"]["health"]["status"] == "Healthy"
        time.sleep(0.5)
    after = operations(argocd, fleet)
    assert after["east"] == before["east"] and after["west"] == before["west"], (before, after)
    assert sum(after["canary"].values()) > sum(before["canary"].values())
