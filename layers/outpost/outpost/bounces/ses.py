"""Amazon SES event notifications delivered by e-mail (SNS e-mail subscriptions).

SES reports bounces and complaints as JSON (``notificationType`` Bounce / Complaint /
Delivery), and an SNS topic with an e-mail subscription mails that JSON as the plain-text
body, either raw or wrapped in the SNS envelope (``{"Type": "Notification", "Message":
"<json string>"}``).  SNS folds long lines: a line that ends in "!" continues on the next
line after one leading space.  The layout follows AWS's documented notification contents
(docs.aws.amazon.com/ses/latest/dg/notification-contents.html) and Sisimai::Lhost::AmazonSES.
"""

from __future__ import annotations

import json
from typing import Any

# bounceType / bounceSubType -> reason, where the subtype says more than the status code.
SUBTYPE_REASON: dict[tuple[str, str], str] = {
    ("Transient", "MailboxFull"): "mailboxfull",
    ("Transient", "MessageTooLarge"): "mesgtoobig",
}


def _unfold(body: str) -> str:
    out: list[str] = []
    folded = False
    for line in body.split("\n"):
        if line == "--":  # the SNS footer ("If you wish to stop receiving...")
            break
        if folded and line[:1] == " ":
            line = line[1:]
        folded = line.endswith("!")
        out.append(line[:-1] if folded else line + "\n")
    return "".join(out)


def ses_payload(body: str) -> dict[str, Any] | None:
    """The SES notification object in a mail body, or None if the body is not one."""
    text = body.lstrip()
    if not text.startswith("{") or "notificationType" not in text:
        return None
    try:
        obj = json.loads(_unfold(text))
        if isinstance(obj, dict) and isinstance(obj.get("Message"), str):
            obj = json.loads(obj["Message"])
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("notificationType"), str):
        return None
    return obj


def ses_entries(payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(kind, entries) for a notification: kind "dsn" with one entry per bounced recipient
    (address, action, status, diagnostic, reason hint), "feedback" with complained
    recipients, or "none" (deliveries and anything else)."""
    ntype = payload["notificationType"]
    if ntype == "Bounce":
        o = payload.get("bounce") or {}
        hint = SUBTYPE_REASON.get((str(o.get("bounceType")), str(o.get("bounceSubType"))))
        out = []
        for r in o.get("bouncedRecipients") or []:
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str):
                out.append({
                    "address": r["emailAddress"], "action": r.get("action"),
                    "status": r.get("status"), "diagnostic": r.get("diagnosticCode") or "",
                    "hint": hint, "remote_mta": o.get("reportingMTA"),
                    "last_attempt": o.get("timestamp"),
                })
        return "dsn", out
    if ntype == "Complaint":
        o = payload.get("complaint") or {}
        out = [{"address": r["emailAddress"],
                "feedback_type": o.get("complaintFeedbackType") or "abuse"}
               for r in o.get("complainedRecipients") or []
               if isinstance(r, dict) and isinstance(r.get("emailAddress"), str)]
        return "feedback", out
    return "none", []


def ses_message_id(payload: dict[str, Any]) -> str | None:
    mail = payload.get("mail")
    mid = mail.get("messageId") if isinstance(mail, dict) else None
    return mid if isinstance(mid, str) else None
