"""Prometheus's HTTP query API (instant queries), for the rollout analysis and telemetry.

Answers come back as data the pure layer reads (reconcile/analysis.Answer): a value per
series, or why there is none. Nothing here raises for an unreachable Prometheus or a
rejected query: both are an inconclusive answer, which holds a rollout."""

from __future__ import annotations

from collections.abc import Sequence

import requests

from edgemodel_operator.reconcile.analysis import Answer

Series = tuple[dict[str, str], float]


class PrometheusError(RuntimeError):
    """No usable answer: Prometheus unreachable, the query rejected, an odd result."""


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()

    def vector(self, query: str) -> list[Series]:
        """The query's result as (labels, value) per series; a scalar has no labels."""
        try:
            answer = self._http.get(f"{self.url}/api/v1/query", params={"query": query},
                                    timeout=self.timeout)  # fmt: skip
        except requests.RequestException as err:
            raise PrometheusError(f"Prometheus at {self.url} is unreachable: {err}") from err
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if answer.status_code != 200 or body.get("status") != "success":
            why = body.get("error") or answer.text[:200]
            raise PrometheusError(
                f"Prometheus at {self.url} answered {answer.status_code} "
                f"({body.get('errorType', 'error')}): {why}"
            )
        data = body.get("data") or {}
        kind, result = data.get("resultType"), data.get("result") or []
        if kind == "scalar":
            return [({}, _number(result[1]))]
        if kind == "vector":
            return [(dict(r.get("metric") or {}), _number(r["value"][1])) for r in result]
        raise PrometheusError(f"the query returns a {kind}, not numbers: {query}")

    def answer(self, query: str) -> Answer:
        try:
            return Answer(values=tuple(value for _, value in self.vector(query)))
        except PrometheusError as err:
            return Answer(error=str(err))

    def answers(self, queries: Sequence[str]) -> list[Answer]:
        """One answer per query; once Prometheus is unreachable the rest say so too."""
        out: list[Answer] = []
        for query in queries:
            if out and "unreachable" in out[-1].error:
                out.append(out[-1])
                continue
            out.append(self.answer(query))
        return out

    def collect(self, queries: dict[str, str]) -> tuple[dict[str, list[Series]], str]:
        """Each query's series by key, or what went wrong with the first that failed."""
        found: dict[str, list[Series]] = {}
        for key, query in queries.items():
            try:
                found[key] = self.vector(query)
            except PrometheusError as err:
                return {}, str(err)
        return found, ""

    def close(self) -> None:
        self._http.close()


def _number(text: str) -> float:
    return float(text)  # Prometheus writes numbers as strings, "NaN" and "+Inf" included
