"""How much of an inbound message the bounce parser reads: named limits with defaults.

Anyone can mail the bounce domain, so every input is hostile until bounded (STYLE: bounded by
construction).  Postfix is the model: a limit with a name, a default and a test.  A report
needs little: RFC 3464 puts the human-readable part and the delivery-status part first, and
the returned original (RET=HDRS, or the start of RET=FULL) after them; what lies beyond these
limits stays in S3 untouched (the raw object is never rewritten).
"""

from __future__ import annotations

# Bytes of the inbound object read (a ranged GET) and parsed.  A DSN with RET=HDRS is a few
# KB; a RET=FULL one carries the whole original after the parts that matter, which end within
# its first few KB (the largest report of the 484-file corpus is under 100 KB).
MESSAGE_READ_LIMIT = 512 * 1024

# Lines of the message handed to the email package, which costs about a microsecond per
# line whatever its length (a megabyte of empty lines is a million lines).  MESSAGE_READ_LIMIT
# bytes of base64 (77-byte lines) are some 7,000 lines; a real report, a few hundred.
MESSAGE_LINE_LIMIT = 10_000

# One logical header (with its continuation lines): Postfix's header_size_limit (102400).
# Longer values are cut before any scan.
HEADER_SIZE_LIMIT = 102400

# Content-* headers are cut much shorter: the email package re-splits such a value at every
# ';' on each get_param(), quadratic in their number.  A Content-Type with a long RFC 2231
# file name stays under 1 KB.
MIME_HEADER_SIZE_LIMIT = 4096
MIME_PARAM_LIMIT = 32

# Headers kept per header block (the rest are dropped as parsed): every lookup of a header
# walks the whole list.  Postfix has no such limit; a real block has under 100.
HEADER_COUNT_LIMIT = 1000

# MIME delimiter lines ("--boundary") read: the parts after the 200th are not parsed.
# Real reports have 3 to 10 parts.
MIME_PART_LIMIT = 200

# multipart/* and message/* containers: Postfix's mime_nesting_limit is 100; reports nest 2
# or 3 deep (report > original > alternative), so 20 containers is plenty.  Python's email
# package checks every open boundary on every line, so depth multiplies its cost.
MIME_NESTING_LIMIT = 20

# Decoded text of one body part that is scanned (Postfix's body_checks_size_limit is 51200;
# bounce texts are shorter, but some quote whole SMTP transcripts).
BODY_SCAN_LIMIT = 64 * 1024

# Characters of the human-readable text of all parts together that the family scans read.
TEXT_SCAN_LIMIT = 128 * 1024

# Recipients read from one report: twice the most one Outpost message has (MAX_RECIPIENTS,
# 50); each costs a look through the text part for its explanation.
REPORT_RECIPIENT_LIMIT = 100

# Characters of one diagnostic (an SMTP reply or a Diagnostic-Code) that classify() reads.
# RFC 5321 section 4.5.3.1.5 allows 512 octets per reply line; a multiline reply from a
# real server stays under a few KB.
DIAGNOSTIC_LIMIT = 4096
