"""The EdgeModels' workers: one task per model, started by its first event, fed its latest
version, stopped by its deletion or the operator's exit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from edgemodel_operator.handlers import workers as workers_module
from edgemodel_operator.handlers.workers import Worker, Workers


def _model(generation: int) -> dict[str, Any]:
    return {"metadata": {"name": "m", "generation": generation, "managedFields": [{}]}}


def test_a_worker_starts_once_reads_the_latest_version_and_stops_on_deletion() -> None:
    seen: list[dict[str, Any]] = []
    ended: list[bool] = []

    async def run(key: tuple[str, str], worker: Worker, indices: Mapping[str, Any]) -> None:
        assert indices == {"pods_index": {}}
        try:
            while not worker.stopped.is_set():
                seen.append(worker.body["metadata"])
                await asyncio.sleep(0.01)
        finally:
            ended.append(worker.deleted)

    async def scenario() -> None:
        workers = Workers(run)
        workers.seen(("ns", "m"), _model(1), {"pods_index": {}})
        await asyncio.sleep(0.03)
        workers.seen(("ns", "m"), _model(2), {"pods_index": {}})
        await asyncio.sleep(0.03)
        assert len(workers) == 1
        workers.gone(("ns", "m"), deleted=True)
        await asyncio.sleep(0.03)
        assert len(workers) == 0 and ended == [True]

    asyncio.run(scenario())
    generations = [meta["generation"] for meta in seen]
    assert generations[0] == 1 and generations[-1] == 2 and sorted(generations) == generations
    assert not any("managedFields" in meta for meta in seen), "a lean copy is kept"


def test_a_model_made_again_under_the_same_name_waits_for_the_old_worker() -> None:
    order: list[str] = []

    async def run(key: tuple[str, str], worker: Worker, indices: Mapping[str, Any]) -> None:
        generation = worker.body["metadata"]["generation"]
        order.append(f"start {generation}")
        await worker.stopped.wait()
        await asyncio.sleep(0.05)  # the old worker's last pass
        order.append(f"end {generation}")

    async def scenario() -> None:
        workers = Workers(run)
        workers.seen(("ns", "m"), _model(1), {})
        await asyncio.sleep(0.01)
        workers.gone(("ns", "m"), deleted=True)
        workers.seen(("ns", "m"), _model(7), {})
        await asyncio.sleep(0.1)
        assert order == ["start 1", "end 1", "start 7"]
        await workers.stop_all(1.0)
        assert order[-1] == "end 7"

    asyncio.run(scenario())


def test_at_exit_a_busy_worker_is_cancelled_and_a_failed_one_is_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[str] = []
    monkeypatch.setattr(workers_module, "RESTART_SECONDS", 0.01)

    async def run(key: tuple[str, str], worker: Worker, indices: Mapping[str, Any]) -> None:
        runs.append(key[1])
        if key[1] == "flaky" and runs.count("flaky") == 1:
            raise RuntimeError("boom")
        while True:  # never looks at worker.stopped
            await asyncio.sleep(1)

    async def scenario() -> None:
        workers = Workers(run)
        workers.seen(("ns", "busy"), _model(1), {})
        workers.seen(("ns", "flaky"), _model(1), {})
        for _ in range(500):  # the failure's log (a rendered traceback) may take a while
            if runs.count("flaky") == 2:
                break
            await asyncio.sleep(0.01)
        assert runs.count("flaky") == 2, runs
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await workers.stop_all(0.05)
        assert loop.time() - t0 < 0.5 and len(workers) == 0

    asyncio.run(scenario())
