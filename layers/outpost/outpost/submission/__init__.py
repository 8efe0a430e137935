"""SMTP submission (issue 13): ports 587 (STARTTLS) and 465 (implicit TLS) with AUTH, in front
of the API's own SendService.send_raw. Run it with `python -m outpost.submission`.

  settings.py  SubmissionSettings: ports, certificate secret, and every limit, from the env
  guard.py     per-client-IP connection counts and the AUTH failure lockout
  replies.py   the one table from the error tree (errors.py) to SMTP replies
  server.py    the aiosmtpd session (EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA) and its listeners
  drain.py     the graceful stop on SIGTERM: 421 4.3.2 to idle sessions, DATA let finish

aiosmtpd is imported only here: the Lambda layer does not ship it; the submission container
installs it (pyproject's `submission` extra).
"""

from __future__ import annotations

from .settings import SubmissionSettings

__all__ = ["SubmissionSettings"]
