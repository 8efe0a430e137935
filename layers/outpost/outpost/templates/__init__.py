"""Stored templates (issue 14): Mustache rendering with bounds (mustache.py), HTML to text
(text.py), CSS inlining (css.py; once per shape in a batch: inlined.py), and the service the
API's template routes and sends use (service.py)."""
