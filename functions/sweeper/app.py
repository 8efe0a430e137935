"""Sweeper: on a schedule, queue a job for every message with an overdue open recipient."""

from outpost.bootstrap import sweeper
from outpost.telemetry import logger, metrics

service = sweeper()


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle_schedule(event)
