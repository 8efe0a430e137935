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
        """A count with its own dimensions (Throttled per provider): one EMF document of its
        own, so the function's other metrics keep theirs."""
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(name=name, unit=MetricUnit.Count, value=n, namespace="Outpost") as m:
            m.add_dimension(name="service", value="outpost")
            for key, value in dimensions.items():
                m.add_dimension(name=key, value=value)


@cache
def metrics() -> _Metrics:
    return _Metrics()
