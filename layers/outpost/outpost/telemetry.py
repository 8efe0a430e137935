"""Logging and metrics for the handlers: Powertools Logger and Metrics (EMF), no X-Ray unless on.

The Tracer costs ~280 ms of cold start; it is imported only when POWERTOOLS_TRACE_ENABLED=true.
"""

from __future__ import annotations

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

    def gauge(self, name: str, value: float) -> None:
        """A level, not a count (the reputation breaker's BounceRate / ComplaintRate, 0..1)."""
        from aws_lambda_powertools.metrics import MetricUnit

        self.m.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)


@cache
def metrics() -> _Metrics:
    return _Metrics()
