"""Sender: SQS batches of send jobs -> DKIM-signed SMTP delivery -> recorded per-recipient outcomes."""

from outpost.bootstrap import delivery_service
from outpost.telemetry import logger, metrics

service = delivery_service()


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle_sqs_event(event, context.get_remaining_time_in_millis)
