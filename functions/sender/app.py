"""Sender: SQS batches of send jobs -> DKIM-signed SMTP delivery -> recorded per-recipient outcomes."""

from outpost.cold_start import handler_init

with handler_init():  # no garbage collection, compiled texts (outpost/cold_start.py; issue 15 item 1)
    from outpost.bootstrap import delivery_service
    from outpost.telemetry import logger, metrics

    service = delivery_service()
    logger(), metrics()  # built here (cached) for the decorators below


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle_sqs_event(event, context.get_remaining_time_in_millis)
