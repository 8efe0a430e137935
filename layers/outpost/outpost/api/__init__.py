"""The HTTPS API: authentication, sending, status queries (routes.py wires them to HTTP).

Before any route module imports Powertools' event handler: its package __init__ and the event
data classes' import every resolver and event type, of which the API uses one (lazy_imports.py;
issue 15, the send API's cold start).
"""

from ..lazy_imports import defer_reexports

for _package in ("aws_lambda_powertools.event_handler", "aws_lambda_powertools.utilities.data_classes"):
    defer_reexports(_package)
