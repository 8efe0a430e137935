"""Send API: API Gateway REST proxy events -> routes in outpost.api (validate, store, enqueue, query)."""

from outpost.cold_start import handler_init

with handler_init():  # no garbage collection, compiled texts (outpost/cold_start.py; issue 15 item 1)
    from aws_lambda_powertools.logging import correlation_paths

    from outpost.bootstrap import api_app
    from outpost.telemetry import logger, metrics

    app = api_app()
    logger(), metrics()  # built here (cached) for the decorators below


@logger().inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics().m.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
