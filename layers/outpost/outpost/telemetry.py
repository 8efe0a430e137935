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
        """A count with its own dimensions (issue 11: per provider), as a separate EMF blob."""
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(name=name, unit=MetricUnit.Count, value=n, namespace="Outpost") as m:
            for k, v in dimensions.items():
                m.add_dimension(name=k, value=str(v))


@cache
def metrics() -> _Metrics:
    return _Metrics()
