"""Bounce processor: SES receipt-rule or S3 events for inbound mail -> parsed, matched, recorded."""

from outpost.cold_start import handler_init

with handler_init():  # no garbage collection, compiled texts (outpost/cold_start.py; issue 15 item 1)
    from outpost.bootstrap import bounce_service
    from outpost.telemetry import logger, metrics

    service = bounce_service()
    logger(), metrics()  # built here (cached) for the decorators below


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle(event)
