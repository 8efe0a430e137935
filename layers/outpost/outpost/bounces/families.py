"""The table of plain-text bounce formats, one row per MTA family.

Most MTAs today send RFC 3464 reports (dsn.py reads those).  Many still send, or used to
send, human-readable text only; for those we need the family's own wording to find the
recipient and the SMTP reply.  Each row is data, not code: a ``detect`` pattern over the
bounce's From/Subject and the start of its body, optional ``begin``/``end`` markers that
bound the error section, and ``rcpt`` patterns that find a failed recipient on a line
(named groups ``addr`` and optionally ``diag``).  Lines that follow a recipient line, up to
a blank line or the next recipient, are its diagnostic.  ``reasons`` maps family-specific
phrases to a reason where the family's wording is known to be unambiguous.

The engine that applies the table is ``textscan.scan_text``.  Rows are tried in order; the
``generic`` row at the end catches the common shapes that many small MTAs share.  The
phrases were taken from real bounces (see tests/golden/bounces/SOURCES.md) and from the
wording documented in Sisimai's Lhost modules (BSD-2-Clause).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_F = re.I | re.M

# An address as MTAs print it in bounces: no spaces, one @, a dotted domain or literal.
# Atomic group: a pattern that follows must not steal the domain's last label ("ex.com.").
ADDR = (r"(?>[^\s<>()\[\]\"',;:@=]+@(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?"
        r"|\[[0-9.:a-fA-F]+\]))")


@dataclass(frozen=True)
class Family:
    name: str
    detect: re.Pattern[str]
    rcpt: tuple[re.Pattern[str], ...]
    begin: re.Pattern[str] | None = None
    end: re.Pattern[str] | None = None
    reasons: tuple[tuple[re.Pattern[str], str], ...] = ()
    # Do lines after a recipient line belong to its diagnostic?
    continuation: bool = True
    # Is the diagnostic text the whole error section rather than the lines per recipient?
    section_diagnostic: bool = False
    # Is the diagnostic always the whole error section (one explanation for everyone)?
    whole_section: bool = False
    # Lines to ignore altogether (MIME debris, banners) before looking for an address.
    skip: re.Pattern[str] | None = None
    # Does the family's RFC 3464 part name an internal mailbox in Final-Recipient, so that
    # Original-Recipient (RFC 3464 section 2.3.1: as the sender gave it) is the address?
    prefer_original: bool = False
    # May a postmaster@ / root@ address be the failed recipient?  Only where the row's
    # section holds nothing but recipients (elsewhere such addresses are the bouncer's own).
    system_addresses: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _r(p: str) -> re.Pattern[str]:
    return re.compile(p, _F)


def _rc(*ps: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p.replace("ADDR", ADDR), _F) for p in ps)


# Where the copy of the original message starts, in the wording of many MTAs.
ORIGINAL_MARKERS = _r(
    r"^(?:"
    r"-+ ?(?:Below this line is a copy of the message|This is a copy of the message"
    r"|Original message follows|Original message|The header of the original message is following"
    r"|Original Message|original message|Message header follows|Returned message"
    r"|Unsent Message below|Unsent message follows|Message text follows)"
    r"|(?:Original message|Message headers|Message header|Original message header) follows"
    r"|[^\S\n]*-+[^\S\n]*(?:Original|Unsent) message(?: header)?(?: follows)?\s*-+"
    r"|Content-Type: (?:message/rfc822|text/rfc822-headers|message/global)"
    r"|[^\S\n]*------ This is a copy of the message"
    r"|The (?:original|first \d+ lines of the) message(?! was received at)"
    r"|Message headers follow"
    r"|Original mail as follows:"
    r"|--- The header of the original message is following"
    r"|-+ ?Original message -+"
    r"|-------original message"
    r"|Here is a copy of the first part of the message|-+ ?START OF RETURNED MESSAGE ?-+"
    r"|The non-delivered message is attached to this message"
    r"|.{0,40}(?:Below is a copy of the original message:|attachment is a copy of the message"
    r"|A copy of the original message below this line:|Your message reads \(in part\):"
    r"|The attachment contains the original mail headers)"
    r"|-{2,} ?(?:Original|Returned) (?:message|mail)"
    # The same boundary in the languages bounces and mail clients are localised to.
    r"|-{2,}[^\S\n]{0,3}(?:Urspr\u00fcngliche Nachricht|Originalnachricht|Message d'origine"
    r"|Message original|Mensaje original|Messaggio originale|Mensagem original"
    r"|Oorspronkelijk bericht|P\u016fvodn\u00ed zpr\u00e1va|Oryginalna wiadomo\u015b\u0107"
    r"|\u0418\u0441\u0445\u043e\u0434\u043d\u043e\u0435 \u0441\u043e\u043e\u0431\u0449\u0435\u043d\u0438\u0435"
    r"|Alkuper\u00e4inen viesti|Opprinnelig melding|Ursprungligt meddelande"
    r"|Oprindelig meddelelse|\u5143\u306e\u30e1\u30c3\u30bb\u30fc\u30b8|\u539f\u59cb\u90ae\u4ef6)"
    r")"
)

FAMILIES: tuple[Family, ...] = (
    # qmail (qmail-send) and the many qmail-derived MTAs (netqmail, vpopmail, Yahoo's old
    # MTA, "Message from yahoo.com."): "<rcpt@domain>:" then the reply lines.
    Family(
        name="qmail",
        detect=_r(
            r"^Hi\. This is the qmail|qmail-send program|^Message from \S+\.\s*$"
            r"|wasn't able to deliver your message to the following addresses"
            r"|^Unable to deliver message to the following address"
            r"|could not be delivered\. This\s+is a permanent error"
            r"|Your mail message to the following address\(es\) could not be delivered"
        ),
        begin=_r(
            r"following addresses|following address\(es\)|^Message from \S+\.\s*$"
            r"|could not be delivered"
        ),
        end=_r(r"^--- (?:Below this line|Original message|Enclosed is a copy)|^--- "),
        rcpt=_rc(r"^<(?P<addr>ADDR)>:\s*(?P<diag>.*)$"),
        reasons=(
            (_r(r"mailfolder is full|mailbox is full|over quota|quota exceeded"), "mailboxfull"),
            # qmail-local / qmail-remote's own words (Sisimai::Lhost::qmail).  Other
            # "no such user" texts in qmail-style bounces carry no SMTP command, so the
            # classifier's rule for them applies (after DATA such replies are often filters).
            (_r(r"no mailbox here by that name|does not like recipient\."), "userunknown"),
            (_r(r"disk quota exceeded"), "mailboxfull"),
            (_r(r"this account has been (?:temporarily )?suspended|account is disabled"
                r"|account is (?:inactive|locked|suspended)"), "suspend"),
            (_r(r"Sorry, I couldn't find any host (?:named|by that name)"
                r"|Sorry, I couldn't find a mail exchanger or IP address"), "hostunknown"),
            (_r(r"I'm not going to try again; this message has been in the queue too long"),
             "expired"),
            (_r(r"Sorry, I wasn't able to establish an SMTP connection|Connected to \S+ but "
                r"(?:sender was rejected|greeting failed)"), "networkerror"),
            (_r(r"Sorry\. Although I'm listed as a best-preference MX"), "systemerror"),
        ),
    ),
    # Exim: "A message that you sent could not be delivered to all of its recipients.
    # The following address(es) failed:" then indented "  rcpt@domain" and reply lines.
    Family(
        name="exim",
        detect=_r(
            r"This message was created automatically by mail delivery software"
            r"|^Subject: (?:Mail delivery failed|Warning: message \S+ delayed)"
            r"|could not be delivered to (?:all|one or more) of its\s+recipients"
            r"|following address\(es\) (?:failed|deferred)"
            r"|has not yet been delivered to all of its recipients"
        ),
        begin=_r(
            r"address\(es\) (?:failed|deferred)|could not be delivered to|has not yet been "
            r"delivered|failed because it has not been collected|^[^\S\n]*The following address"
            r"|could not be delivered"
        ),
        end=_r(r"^-+ This is a copy of|^-+ The header of the original|^[^\S\n]*-+ ?This is a copy"
               r"|^-+ Original message|^-+ The body of the message"),
        rcpt=_rc(
            r"^ {1,3}(?:<)?(?P<addr>ADDR)(?:>)?(?: <[^>]*>)?:?\s*(?P<diag>.*)$",
            r"^(?P<addr>ADDR)\s*$",
            r"^(?:<)?(?P<addr>ADDR)(?:>)?:\s*(?P<diag>.*)$",
            r"addressed to '(?P<addr>ADDR)'(?P<diag>.*)$",
            r"^[^\S\n]*(?:pipe|save) to \S+\s+generated by (?P<addr>ADDR)\s*$",
            # "  an undisclosed address\n    (generated from user@example.com)"
            r"^[^\S\n]+\(generated from (?P<addr>ADDR)\)\s*$",
        ),
        reasons=(
            (_r(r"retry time not reached for any host after a long failure period"
                r"|retry timeout exceeded|has not been collected after"), "expired"),
            (_r(r"unrouteable (?:mail )?(?:domain|address)|all relevant MX records point to "
                r"non-existent hosts|all host address lookups failed permanently"),
             "hostunknown"),
            (_r(r"mailbox is full|quota exceeded|over quota"), "mailboxfull"),
        ),
    ),
    # Postfix plain-text notices (old versions sent no DSN part): "<rcpt>: host ... said:".
    Family(
        name="postfix",
        detect=_r(r"^This is the mail system at host|The Postfix program|^Subject: Undelivered Mail"
                  r"|^From:.*\(Mail Delivery System\)"),
        begin=_r(r"I'm sorry to have to inform you|could not be delivered to one or more"
                 r"|^This is the mail system at host|The Postfix program"),
        end=_r(r"^Content-Description: (?:Undelivered Message|Delivery report|Notification)"
               r"|^Reporting-MTA:|^Final-Recipient:|^--- Delivery report"),
        rcpt=_rc(
            r"^<(?P<addr>ADDR)>(?: \(expanded from <[^>]*>\))?:\s*(?P<diag>.*)$",
            r"^(?P<addr>ADDR)(?: \(expanded from [^)]*\))?:\s*(?P<diag>.*)$",
        ),
    ),
    # Lotus Notes / Domino: "was not delivered to:\n\n  rcpt\n\nbecause:\n\n  reason".
    Family(
        name="notes",
        detect=_r(r"was not delivered to:|^Subject: DELIVERY (?:FAILURE|REPORT)"
                  r"|Domino Directory"),
        begin=_r(r"was not delivered to:"),
        rcpt=_rc(r"^[^\S\n]+(?P<addr>ADDR)\s*$"),
        section_diagnostic=True,
        reasons=((_r(r"not listed in (?:Domino|public Name & Address) Directory"
                     r"|user not listed"), "userunknown"),),
    ),
    # Amazon SES inbound (receiving) rule actions that bounce: an RFC 3464 report from
    # "MAILER-DAEMON@...amazonses.com" marked X-SES-Outgoing; its templates' wording says
    # more than the status code (Sisimai::Lhost::ReceivingSES).
    Family(
        name="receivingses",
        detect=_r(r"^X-SES-Outgoing:"),
        begin=_r(r"^This message could not be delivered\."),
        rcpt=(),
        reasons=(
            (_r(r"Mailbox does not exist"), "filtered"),
            (_r(r"Message too large"), "mesgtoobig"),
            (_r(r"Mailbox full"), "mailboxfull"),
            (_r(r"Message content rejected"), "contenterror"),
        ),
    ),
    # Sun Java System / Oracle Communications Messaging Server: "This report relates to a
    # message you sent", then "Recipient address:" (its internal mailbox, e.g.
    # "user@ims-ms-daemon") and "Original address:" (what the sender wrote) per recipient.
    # Its RFC 3464 part has the same pair as Final-Recipient / Original-recipient.
    Family(
        name="messagingserver",
        detect=_r(r"^This report relates to a message you sent with the following header"),
        begin=_r(r"^Your message cannot be delivered to the following recipients"
                 r"|^Your message is being delayed"),
        rcpt=_rc(r"^[^\S\n]+Original address:\s*(?P<addr>ADDR)\s*$"),
        prefer_original=True,
    ),
    # Microsoft Exchange 5.5/2000/2003 and other X.400-flavoured gateways:
    # "did not reach the following recipient(s):" then "rcpt on <date>" and the reason.
    Family(
        name="exchange",
        detect=_r(r"did not reach the following recipient|MSEXCH:"
                  r"|could not be delivered to the following recipient"),
        begin=_r(r"did not reach the following recipient|following recipient"),
        rcpt=_rc(
            r"^[^\S\n]*(?P<addr>ADDR) on \w{3}, .*$",
            r"SMTP=(?P<addr>ADDR);?\s+on\s.*$",
            r"^[^\S\n]*(?P<addr>ADDR)\s+on\s+\d.*$",
            r"^[^\S\n]*(?:<)?(?P<addr>ADDR)(?:>)?\s*$",
        ),
        reasons=(
            (_r(r"\(000C05A6\)|recipient name is not recognized|unknown recipient"), "userunknown"),
            (_r(r"\(000B09AA\)|\(000B099C\)|recipient's mailbox is full|mailbox full"),
             "mailboxfull"),
            (_r(r"\(0006D\d{3}\)|message has been rejected|access denied"), "filtered"),
        ),
    ),
    # Ipswitch IMail / SMTP32: "Unknown user: rcpt" / "RCPT TO generated following response".
    Family(
        name="imailserver",
        detect=_r(r"^(?:Unknown user|Body of message generated response|RCPT TO generated"
                  r"|Delivery failed \d+ attempts|Original message follows\.)"
                  r"|^X-Mailer: <SMTP32|^Subject: Undeliverable Mail\s*$"),
        rcpt=_rc(
            r"^(?P<diag>(?:Unknown user|User mailbox exceeds allowed size|Mail server temporarily "
            r"rejected message|Mail server permanently rejected message|Delivery failed "
            r"\d+ attempts|Host unknown|Unknown host|No mailbox for|Connection timed out|"
            r"Unable to deliver|Could not deliver mail to)[^:]*):\s*<?(?P<addr>ADDR)>?\s*$",
            r"^undeliverable\s+to\s+<?(?P<addr>ADDR)>?\s*$",
            # Not the quoted header block ("To: ...", "CC: ...") IMail prints above.
            r"^(?!(?:To|CC|Bcc|From|Date|Subject|Reply-To)\s*:)(?P<diag>.*?):\s*<?(?P<addr>ADDR)>?\s*$",
        ),
        reasons=(
            (_r(r"^Unknown user|Invalid final delivery userid"), "userunknown"),
            (_r(r"^User mailbox exceeds allowed size"), "mailboxfull"),
            (_r(r"^Delivery failed \d+ attempts"), "expired"),
            (_r(r"^(?:Host unknown|Unknown host)"), "hostunknown"),
        ),
    ),
    # Gmail's old plain-text DSN: "Delivery to the following recipient failed permanently:".
    Family(
        name="gmail",
        detect=_r(r"Delivery to the following recipients? (?:failed|has been delayed)"
                  r"|^This is an automatically generated Delivery Status Notification"),
        begin=_r(r"Delivery to the following recipients?|^This is an automatically generated"),
        end=_r(r"^[^\S\n]*-+ Original message -+|^[^\S\n]*-+ Message truncated"),
        rcpt=_rc(r"^[^\S\n]+(?P<addr>ADDR)\s*$"),
        section_diagnostic=True,
        reasons=(
            (_r(r"The email account that you tried to reach does not exist"), "userunknown"),
            (_r(r"over (?:its|their) storage allowance|mailbox is full|OverQuota"), "mailboxfull"),
            (_r(r"The email account that you tried to reach is disabled"), "suspend"),
            (_r(r"delivery to the following recipient has been delayed"
                r"|Delivery to the following recipients? failed temporarily"), "expired"),
            (_r(r"DNS Error: Domain name not found|The domain \S+ couldn't be found"),
             "hostunknown"),
        ),
    ),
    # DragonFly Mail Agent (dma): "There was an error delivering your mail to <rcpt>."
    Family(
        name="dragonfly",
        detect=_r(r"^This is the DragonFly Mail Agent|There was an error delivering your mail to"),
        end=_r(r"^Message headers follow\.|^Original message follows"),
        rcpt=_rc(r"There was an error delivering your mail to <(?P<addr>ADDR)>\.?\s*(?P<diag>.*)$"),
        section_diagnostic=True,
        reasons=(
            (_r(r"Name or service not known|no MX records? found|unknown host|NXDOMAIN"),
             "hostunknown"),
            (_r(r"unable to connect|no working MX|temporary failure|Connection refused"),
             "networkerror"),
        ),
    ),
    # m-FILTER (Japanese appliance): the address on the line after a Japanese banner.
    Family(
        name="mfilter",
        detect=_r(r"m-FILTER"),
        end=_r(r"^-------original (?:message|mail info)"),
        rcpt=_rc(r"^(?P<addr>ADDR)\s*$"),
        section_diagnostic=True,
    ),
    # NEC's BIGLOBE and the Japanese cable ISPs on its platform: "----- The following
    # addresses had delivery problems -----", one address per line, then "----- Non-delivered
    # information -----" and the reason (Sisimai::Lhost::Biglobe).
    Family(
        name="biglobe",
        detect=_r(r"^From:.*postmaster@(?:biglobe|inacatv|tmtv|ttv)\.ne\.jp"),
        begin=_r(r"^ *----- The following addresses had delivery problems -----"),
        rcpt=_rc(r"^(?P<addr>ADDR)\s*$"),
        whole_section=True,
        system_addresses=True,
        reasons=(
            (_r(r"Mail Delivery Failed\.\.\. User unknown"), "filtered"),
            (_r(r"The number of messages in recipient's mailbox exceeded the local limit"),
             "mailboxfull"),
        ),
    ),
    # Yahoo!, AOL and other webmail "Sorry, we were unable to deliver your message" texts.
    Family(
        name="webmail",
        detect=_r(r"Sorry, we were unable to deliver your message to the following address"
                  r"|This is an automatically generated message from .*Mail Delivery"
                  r"|The following message to <"),
        rcpt=_rc(r"^<(?P<addr>ADDR)>:?\s*(?P<diag>.*)$",
                 r"The following message to <(?P<addr>ADDR)> was undeliverable\.?(?P<diag>.*)$"),
        end=_r(r"^-+ ?(?:Original message|Forwarded message)"),
    ),
    # Everything else with a recognisable bounce wording: the generic shapes many small
    # MTAs and appliances (InterScan, MDaemon, MXLogic, Novell GroupWise...) share.
    Family(
        name="generic",
        detect=_r(
            r"^Subject:.*(?:undeliver|not (?:be )?delivered"
            r"|delivery (?:failure|failed|problem|status)"
            r"|returned mail|failure notice|mail error|delivery notification|failed mail"
            r"|non[- ]?delivery|mail delivery|rejected|nicht zustellbar|delivery report"
            r"|system error)"
            r"|^From:.*(?:mailer-daemon|postmaster|mail delivery|mail administrator|MDaemon)"
            r"|could not be delivered|delivery (?:has )?failed|undeliverable"
            r"|permanent (?:fatal )?error"
            # A mailing list manager's refusal of a post (fml, Majordomo, Mailman, Sympa).
            r"|not a member of (?:this|the) (?:mailing )?list"
        ),
        rcpt=_rc(
            r"^[^\S\n]*<(?P<addr>ADDR)>\s*[:.]?\s*(?P<diag>.*)$",
            r"^[^\S\n]*(?P<addr>ADDR)\s*(?::|\.\.\.|--|-)\s*(?P<diag>.*)$",
            # "<verdict>: rcpt" (IMail, SMTP32 and other small MTAs put the reason first);
            # not a quoted header line of the original.
            r"^(?!(?:To|CC|Bcc|From|Date|Subject|Reply-To|Sender|Return-Path|Message-Id"
            r"|Received|In-Reply-To|References|Delivered-To|Envelope-To|X-[\w-]+)[^\S\n]*:)"
            r"(?![^:\n]*\b(?:sender|from|mta|messagename|message-?id|reply)\b)"
            r"(?P<diag>[A-Za-z][^:@<>\n]{2,60}):[^\S\n]*<?(?P<addr>ADDR)>?[^\S\n]*$",
            # A transcript's recipient: ">>> RCPT TO:<rcpt>" (Sendmail, Courier), the
            # envelope quoted as "RCPT TO: rcpt" (Verizon, James), or
            # ">>> rcpt <rcpt>" under "addresses had permanent fatal errors".
            r"^[^\S\n]*(?P<diag>(?:>>>[^\S\n]*)?RCPT[^\S\n]+TO:[^\S\n]*<?(?P<addr>ADDR)>?.*)$",
            r"^>>>[^\S\n]+(?P<addr>ADDR)(?:[^\S\n]+<[^<>\n]*>)?[^\S\n]*$",
            r"^[^\S\n]*(?:Recipient|To|Address|Failed address|Invalid recipient|Unknown user"
            r"|Rcpt|Destinataire|Addressee|original recipient|Recipient address)s?:?\s*"
            r"(?:\"[^\"]*\"\s*)?<?(?P<addr>ADDR)>?[ .,:]*(?P<diag>.*)$",
            r"^[^\S\n]*(?P<addr>ADDR)\s*$",
            r"^[^\S\n]*[*\-]\s+<?(?P<addr>ADDR)>?\s*$",
            r"(?:recipients?|address(?:es)?)\b[^:\n]{0,60}:\s*<?(?P<addr>ADDR)>?[.,;]?\s*(?P<diag>.*)$",
            r"(?:message to|mail to|delivery to|addressed to|recipient) <?'?(?P<addr>ADDR)'?>?"
            r"(?: (?:failed|could not|was not|cannot|has)| ?[:,.]|\s*$)(?P<diag>.*)$",
            # X.400 gateways (Exchange 5.5, GroupWise): "...;dda:SMTP=rcpt; on <date>" and
            # "rcpt on <date>" under "did not reach the following recipient(s)".
            r"\bSMTP=(?P<addr>ADDR);?(?:[^\S\n]+on\s.*)?$",
            r"^[^\S\n]*(?P<addr>ADDR)[^\S\n]+on[^\S\n]+(?:\w{3},[^\S\n])?\d.*$",
            r"\bundeliverable[^\S\n]+to[^\S\n]+<?(?P<addr>ADDR)>?[^\S\n]*$",
            # An alias or undisclosed address the MTA names by its source (Exim).
            r"^[^\S\n]+\(generated from (?P<addr>ADDR)\)\s*$",
            # A sentence that ends with the address it is about: "You are not a member of
            # this mailing list <ml@x>." (list managers), "Loop detected in <ml@x>.".
            # Words and no colon before it (not a quoted "Message-ID: <...>" header line).
            r"^(?P<diag>[^<>:\n]*[A-Za-z][^\S\n])<(?P<addr>ADDR)>\.[^\S\n]*$",
        ),
    ),
    # Last resort, for bounces no row above explains: Sisimai's RFC 3464 "fallback body
    # parser" (Sisimai::RFC3464, BODY_PARSER_FOR_FALLBACK) ported as a row.  Only when the
    # message comes from a mailer daemon (From, Subject, or a null Return-Path), every line
    # up to the copy of the original is read, and a line that starts with an address, or
    # names one after a phrase MTAs use ("Your message to", "unknown user:", "RCPT TO:"),
    # gives a recipient.  The whole error section is the diagnostic.
    Family(
        name="fallback",
        detect=_r(
            r"^From:.*\b(?:postmaster|mailer-daemon|root)@"
            r"|^Subject:.*(?:delivery (?:failed|failure|report)|failure notice"
            r"|mail (?:delivery|error)|non-delivery|returned mail|undeliverable mail|warning: )"
            r"|^Return-Path:\s*(?:<>|.*mailer-daemon)"
        ),
        end=_r(
            r"^(?:content-type:\s*(?:message/rfc822|text/rfc822-headers|message/delivery-status)"
            r"|return-path:\s*<.+>\s*$|\*\*\* .+ .+ \*\*\*|here is a copy of the first part "
            r"of the message|the non-delivered message is attached to this message\."
            r"|received:|received-from-mta:|reporting-mta:|a copy of the original message "
            r"below this line:)"
            r"|attachment is a copy of the message|below is a copy of the original message:"
            r"|below this line is a copy of the message|message contains .+ file attachments"
            r"|message text follows: |original message follows|the attachment contains the "
            r"original mail headers|the first \d+ lines |unsent message below"
            r"|your message reads \(in part\):"
        ),
        skip=_r(
            r"^-+=|^[^\S\n]*$|^[^\S\n]*--|^[^\S\n]+=\d+|^hi !|^\*"
            r"|content-(?:description|disposition|transfer-encoding|type): "
            r"|(?:name|charset)=|--$|: --------"
        ),
        # The local part excludes '"' (Sisimai's allows it): after the greedy display name
        # ^".+" backtracks to each quote of a line, a local part that may run through the
        # next quotes made every line quadratic.
        rcpt=(re.compile(
            r"(?:^[^\S\n]*|^\".+\"\s*|^[ \t]*recipient:[ \t]*|^ *address: |addressed to "
            r"|could not be delivered to: |delivered to +|delivery failed: "
            r"|did not reach the following recipient: |error-for: +|failed recipient: "
            r"|failed to deliver to |intended recipient: |mailbox is full: |rcpt to:"
            r"|smtp server <.+> rejected recipient |the following recipients returned "
            r"permanent errors: |the following message to |unknown user: |undeliverable to "
            r"|undeliverable address: *|you sent mail to |your message to )"
            r"['\"]?<?(?P<addr>[^\s@=<>\"]+@[-.0-9a-z]+\.[0-9a-z]+)>?['\"]?", re.I),),
        continuation=False,
        whole_section=True,
    ),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}


# Vendor wordings and vendor reply codes that name the reason: see _vendor.py (kept apart
# because classify(), which the sender calls on every SMTP reply, uses them too).
from outpost.bounces._vendor import VENDOR_CODES, VENDOR_PHRASES  # noqa: E402,F401

# PowerMTA's own verdict (X-PowerMTA-BounceCategory, in its DSN part) -> reason.
POWERMTA_CATEGORY: dict[str, str] = {
    "bad-mailbox": "userunknown", "bad-domain": "hostunknown", "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull", "message-expired": "expired", "no-answer-from-host":
    "expired", "routing-errors": "systemerror", "spam-related": "spamdetected",
    "policy-related": "policyviolation", "relaying-issues": "norelaying",
    "content-related": "contenterror", "virus-related": "virusdetected",
    "bad-connection": "networkerror", "protocol-errors": "systemerror",
    "message-too-large": "mesgtoobig", "invalid-sender": "rejected",
}


# Local delivery agents (MDAs) that write their own one-line verdict into the bounce their
# MTA returns, e.g. "mail.local: unknown user: bob" or Dovecot's "Your message to <bob@x>
# was automatically rejected:" followed by the reason (Sisimai::MDA, BSD-2-Clause).  Each
# row: agent name, the line that introduces it, then (reason, lower-case phrases).  The
# verdict is the agent's own and says more than the status code the MTA wrapped it in.
MDA_AGENTS: tuple[tuple[str, re.Pattern[str], tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("dovecot", re.compile(r"^Your message to \S+ was automatically rejected:\s*$", re.M), (
        ("userunknown", ("mailbox doesn't exist: ",)),
        ("mailboxfull", ("quota exceeded", "not enough disk space")),
    )),
    ("mail.local", re.compile(r"^mail\.local: ", re.M), (
        ("userunknown", (": unknown user:", ": user unknown", ": invalid mailbox path",
                         ": user missing home directory")),
        ("mailboxfull", ("disc quota exceeded", "mailbox full or quota exceeded")),
        ("systemerror", ("temporary file write error",)),
    )),
    ("procmail", re.compile(r"^procmail: ", re.M), (
        ("mailboxfull", ("quota exceeded while writing",)),
        ("systemfull", ("no space left to finish writing",)),
    )),
    ("maildrop", re.compile(r"^maildrop: ", re.M), (
        ("userunknown", ("invalid user specified.", "cannot find system user")),
        ("mailboxfull", ("maildir over quota.",)),
    )),
    ("vpopmail", re.compile(r"^vdelivermail: ", re.M), (
        ("userunknown", ("sorry, no mailbox here by that name.",)),
        ("filtered", ("account is locked email bounced",
                      "user does not exist, but will deliver to ")),
        ("mailboxfull", ("domain is over quota", "user is over quota")),
    )),
    ("vmailmgr", re.compile(r"^vdeliver: ", re.M), (
        ("userunknown", ("invalid or unknown base user or domain",
                         "invalid or unknown virtual user",
                         "user name does not refer to a virtual user")),
        ("mailboxfull", ("delivery failed due to system quota violation",)),
    )),
)
