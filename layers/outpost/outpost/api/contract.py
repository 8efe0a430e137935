"""What the OpenAPI document declares beyond the pydantic field types (issue 8, item 23).

The models' validators enforce some rules in code (an address parses, a header line has no
line break, a message has a recipient and a body, an attachment has exactly one source);
JSON Schema can state most of them, and a client generated from the document, or a fuzzer
(`schemathesis --checks all`), should be told. `declare(doc)` adds them to the generated
document, in one place, each next to the validator it mirrors:

  - a one-line field (models._one_line): no CR, LF or NUL;
  - an address (addresses.parse_address): its plain ASCII form, a dot-atom local part and LDH
    labels with a letters-only TLD, within RFC 5321's lengths. Everything that matches is
    accepted; the parser also accepts what no simple pattern describes (a display name,
    an internationalised address, a quoted local part), so the pattern is the portable subset;
  - SendRequest._whole: text or html, and at least one recipient; at most 50 recipients per
    field (50 in all is the server's rule, which JSON Schema cannot sum); or, in place of
    subject/text/html, a template (issue 14, _template_form);
  - SendRequest._headers: header names are RFC 5322 ftext and not one Outpost sets itself;
  - SendRequest._tags: names up to 128 characters, values up to 256;
  - Attachment: content is base64, and exactly one of content or upload_id;
  - UploadRequest.size: at most 40 MB (a larger one is refused with 413, not 422).
Patterns use bounded repetitions, no lookarounds (pydantic's regex engine has none, and
ECMA-262 regexes are what the document's readers run).
"""

from __future__ import annotations

from typing import Any

from ..models import (
    MAX_HEADER_NAME,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    MAX_RECIPIENTS,
    MAX_REPLY_TO,
    ONE_LINE_PATTERN,
    OWNED_HEADERS,
)

_LOCAL = r"[A-Za-z0-9!$&'*+=^_~-]{1,32}(\.[A-Za-z0-9!$&'*+=^_~-]{1,30})?"
_LABEL = r"[A-Za-z0-9]{1,16}(-[A-Za-z0-9]{1,16}){0,2}"  # at most 50 characters, no "--"
DOMAIN_PATTERN = rf"^({_LABEL}\.){{1,4}}[A-Za-z]{{2,20}}$"
ADDRESS_PATTERN = rf"^{_LOCAL}@({_LABEL}\.){{1,3}}[A-Za-z]{{2,20}}$"
BASE64_PATTERN = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
HEADER_NAME_PATTERN = rf"^[!-9;-~]{{1,{MAX_HEADER_NAME}}}$"  # RFC 5322 ftext: printable ASCII except ':'

ADDRESS = {"type": "string", "minLength": 3, "maxLength": 254, "pattern": ADDRESS_PATTERN,
           "format": "email", "example": "someone@example.com"}
DOMAIN = {"type": "string", "minLength": 3, "maxLength": 253, "pattern": DOMAIN_PATTERN,
          "format": "hostname", "example": "example.com"}


def _nocase(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# Names Outpost sets itself, any case, and every Content-*: refused in `headers`.
OWNED_HEADER_PATTERN = ("^(" + "|".join(_nocase(h) for h in sorted(OWNED_HEADERS)) + ")$|^"
                        + _nocase("content-"))


def _one_line(prop: dict[str, Any]) -> None:
    target = next((s for s in prop.get("anyOf", []) if s.get("type") == "string"), prop)
    target["pattern"] = ONE_LINE_PATTERN


def _recipients(maximum: int) -> dict[str, Any]:
    return {"anyOf": [ADDRESS, {"type": "array", "items": ADDRESS, "maxItems": maximum}],
            "description": f"one address or a list; at most {MAX_RECIPIENTS} recipients in to, cc "
                           "and bcc together"}


def _nonempty(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"anyOf": [
        {"type": "string"}, {"type": "array", "minItems": 1}]}}}


def _template_form(send: dict[str, Any]) -> None:
    """Issue 14 (SendRequest._template_or_body): subject with text or html, or a template (with
    its variables and version) in their place, the other form's fields absent or empty."""
    null = {"type": "null"}
    body = {"required": ["subject"], "allOf": [send["allOf"][0]],
            "properties": {"template": null, "template_version": null, "variables": null}}
    template = {"required": ["template"], "properties": {
        "template": {"type": "string"}, "subject": {"maxLength": 0}, "html": null, "text": null}}
    send["allOf"][0] = {"oneOf": [body, template]}


def declare(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.get("components", {}).get("schemas", {})
    send = schemas.get("SendRequest")
    if send:
        p = send["properties"]
        p["from"] = {**ADDRESS, "description": p["from"].get("description", "")}
        for f in ("to", "cc", "bcc"):
            p[f] = _recipients(MAX_RECIPIENTS)
        p["reply_to"] = {"anyOf": [ADDRESS, {"type": "array", "items": ADDRESS, "maxItems": MAX_REPLY_TO}]}
        _one_line(p["subject"])
        p["headers"].update(
            maxProperties=MAX_HEADERS,
            propertyNames={"pattern": HEADER_NAME_PATTERN, "not": {"pattern": OWNED_HEADER_PATTERN}},
            additionalProperties={"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": ONE_LINE_PATTERN})
        p["tags"].update(propertyNames={"maxLength": 128},
                         additionalProperties={"type": "string", "maxLength": 256})
        send["allOf"] = [
            {"anyOf": [{"required": ["text"], "properties": {"text": {"type": "string"}}},
                       {"required": ["html"], "properties": {"html": {"type": "string"}}}]},
            {"anyOf": [_nonempty("to"), _nonempty("cc"), _nonempty("bcc")]},
        ]
        _template_form(send)
    att = schemas.get("Attachment")
    if att:
        p = att["properties"]
        _one_line(p["filename"])
        _one_line(p["content_id"])
        p["content"]["anyOf"][0]["pattern"] = BASE64_PATTERN
        att["oneOf"] = [{"required": ["content"], "properties": {"content": {"type": "string"}}},
                        {"required": ["upload_id"], "properties": {"upload_id": {"type": "string"}}}]
    up = schemas.get("UploadRequest")
    if up:
        _one_line(up["properties"]["filename"])
        up["properties"]["size"]["maximum"] = MAX_MESSAGE_BYTES
    put = schemas.get("SuppressionPut")
    if put:
        _one_line(put["properties"]["reason"])
    dom = schemas.get("DomainCreate")
    if dom:
        dom["properties"]["domain"] = {**DOMAIN, "description": dom["properties"]["domain"].get(
            "description", "")}
    return doc
