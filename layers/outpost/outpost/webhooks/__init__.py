"""Webhooks (issue 12): signed HTTP POSTs of events to the endpoints users register.

  records.py   WebhookEndpoint, WebhookSecret, WebhookAttempt: the typed records
  signing.py   Standard Webhooks secrets and signatures (webhook-id/-timestamp/-signature)
  ssrf.py      which URLs and addresses may be called (check_url -> Target), at registration
               and again before every attempt
  http.py      one bounded POST to a checked address (no redirects, capped read, 10 s total)
  jobs.py      the delivery job (the queue body) and the retry schedule (schedule.py)
  sink.py      WebhookSink (an events.EventSink): one job per (event, subscribed endpoint)
  dispatch.py  the dispatcher: a batch of jobs, each POSTed concurrently, recorded, retried
  service.py   the API's side: create, list, show, delete, rotate, replay

Delivery is at least once: a job is deleted from the queue only after its attempt is
recorded and, when it failed, its retry queued; the receiver dedupes on `webhook-id` (the
event id, the same on every retry and replay).
"""
