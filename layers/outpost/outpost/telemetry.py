"""Logging and metrics for the handlers: Powertools Logger and Metrics (EMF), no X-Ray unless on.

The Tracer costs ~280 ms of cold start; it is imported only when POWERTOOLS_TRACE_ENABLED=true.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any


@cache
def logger() -> Any:
    from aws_lambda_powertools import Logger

    return Logger(service="outpost")


class _Metrics:
    def __init__(self) -> None:
        from aws_lambda_powertools import Metrics

        self.m = Metrics(namespace="Outpost", service="outpost")

    def count(self, name: str, n: int = 1) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.m.add_metric(name=name, unit=MetricUnit.Count, value=n)

    def count_by(self, name: str, n: int, dimensions: Mapping[str, str]) -> None:
        """A count with its own dimensions (issue 11: per provider), as a separate EMF blob
        written at once (Powertools' single_metric). Only in Lambda, and not when metrics are
        off (POWERTOOLS_METRICS_DISABLED, which single_metric ignores): the local stack and
        the tests call the services directly, where the other counts are never flushed."""
        from aws_lambda_powertools.metrics import MetricUnit

        _single(name, MetricUnit.Count, n, dimensions)

    def gauge(self, name: str, value: float, dimensions: Mapping[str, str] | None = None) -> None:
        """A level, not a count (the reputation breaker's BounceRate / ComplaintRate, 0..1).
        With dimensions (a scope's Domain or ApiKey), its own EMF blob written at once with
        exactly those dimensions and `service`, so the alarms' Metrics Insights query
        SCHEMA("Outpost", Domain, service) covers every domain (only in Lambda, as count_by)."""
        from aws_lambda_powertools.metrics import MetricUnit

        if not dimensions:
            self.m.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)
            return
        _single(name, MetricUnit.NoUnit, value, dimensions)


def _single(name: str, unit: Any, value: float, dimensions: Mapping[str, str]) -> None:
    """One metric with exactly `service` and these dimensions, written at once (count_by,
    gauge): only in Lambda, and not when metrics are off."""
    import os

    from aws_lambda_powertools.metrics import single_metric

    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or \
            os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true"):
        return
    with single_metric(name=name, unit=unit, value=value, namespace="Outpost") as m:
        m.add_dimension(name="service", value="outpost")
        for k, v in dimensions.items():
            m.add_dimension(name=k, value=str(v))


@cache
def metrics() -> _Metrics:
    return _Metrics()
