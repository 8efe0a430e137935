"""Send API: API Gateway REST proxy events -> routes in outpost.api (validate, store, enqueue, query)."""

import gc

# No garbage collection during init (issue 15 item 1): the imports and the build make some
# 120,000 tracked objects and leave about 500 unreachable, so the ~130 collections they would
# trigger cost 10-15% of init and free almost nothing. What init built lives as long as the
# process: gc.freeze() keeps it out of the collector's way, so the first request does not pay
# the first full collection over it (30-45 ms of the first POST with the bytecode layer), and
# collection is back on for the requests. bench/cold_start.py --built has the figures.
gc.disable()
try:
    from outpost.code_cache import install

    install()  # the texts dataclasses and typing compile at import, compiled at build time (code_cache.py)

    from aws_lambda_powertools.logging import correlation_paths

    from outpost.bootstrap import api_app
    from outpost.telemetry import logger, metrics

    app = api_app()
    logger(), metrics()  # built here (cached) for the decorators below, before the freeze
    gc.freeze()
finally:
    gc.enable()


@logger().inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics().m.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
