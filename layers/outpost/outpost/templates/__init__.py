"""Stored templates (issue 14): Mustache rendering with bounds (mustache.py), HTML to text
(text.py), and the service the API's template routes and sends use (service.py)."""
