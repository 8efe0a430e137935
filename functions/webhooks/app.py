"""Webhook dispatcher: SQS batches of delivery jobs -> signed POSTs, each bounded -> recorded, retried."""

from outpost.bootstrap import webhook_dispatcher
from outpost.telemetry import logger, metrics

dispatcher = webhook_dispatcher()


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return dispatcher.handle_sqs_event(event)
