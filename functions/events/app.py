"""Events: DynamoDB stream batches of recipient changes -> events -> the event log, EventBridge, webhooks."""

from outpost.bootstrap import event_service
from outpost.telemetry import logger, metrics

service = event_service()


@logger().inject_lambda_context
@metrics().m.log_metrics
def lambda_handler(event, context):
    return service.handle_stream_event(event, context)
