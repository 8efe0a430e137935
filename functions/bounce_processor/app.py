"""Bounce processor: SES receipt-rule or S3 events for inbound mail -> parsed, matched, recorded."""

from outpost.bootstrap import bounce_service
from outpost.telemetry import logger, metrics

service = bounce_service()


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle(event)
