"""The operator's command line, `outpost-admin`: API keys and sending domains of a stack.

Installed with the project (pyproject.toml), not shipped in the Lambda layer: it runs with the
deployer's credentials and finds the stack's resources in its Outputs (outputs.py).
"""

from .cli import main

__all__ = ["main"]
