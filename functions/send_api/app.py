"""Send API: API Gateway REST proxy events -> routes in outpost.api (validate, store, enqueue, query)."""

import gc

from aws_lambda_powertools.logging import correlation_paths

from outpost.bootstrap import api_app
from outpost.telemetry import logger, metrics

app = api_app()
# What init built lives as long as the process: frozen out of the collector's way, so the first
# request does not pay the first full collection over it (with the bytecode layer, 30-45 ms of
# the first POST; bench/cold_start.py --built, issue 15 item 1).
gc.freeze()


@logger().inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics().m.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
