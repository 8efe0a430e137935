"""Nothing lost, nothing sent twice: a bounded chaos run through the local stack (issue 8,
"What already holds, and must keep holding").

300 messages (about 530 recipients) go through the real API of an embedded local stack
(DynamoDB Local, moto's serialised SQS, DNS server, test CA, the sweeper on its schedule) whose
MX hosts drop the connection after RCPT, after the 354 and at end of data, answer 421 at the
greeting and 451/452 at RCPT, fail the TLS handshake, stall just under and past the command
timeout, reject some users with 550 or never accept; DNS answers SERVFAIL or nothing for some
domains (for a while, and one for ever). Four concurrent sender 'containers' run the real
DeliveryService; invocations are killed after a claim, after a remote 250 (before its record),
after a record, or at a random moment, and at their Lambda timeout; some jobs are duplicated,
some are not deleted, some recipient writes fail with throttling (outpost_local/chaos.py).

Then: every recipient is final and queryable through GET /v1/messages/{id}; its state agrees
with what its MX did (a copy kept -> delivered; 550 -> bounced; never accepted -> expired); a
second copy only where an invocation was killed holding that recipient's lease (the documented
window: a crash after the remote 250 and before the record); the dead-letter queue is empty.

The run happens in its own process (bench/chaos.py --json): a local stack owns its process's
AWS environment, and the session's shared stack must keep its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(330)]


@pytest.fixture(scope="module")
def figures() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "layers" / "outpost"), str(ROOT / "local")]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--json", "--messages", "300", "--senders", "4",
         "--kill-probability", "0.1", "--kill-for", "20",
         "--kill-every", "6", "--kill-first", "60", "--lifetime", "75", "--wait", "200",
         "--ip-prefix", "127.0.9"],
        capture_output=True, text=True, timeout=320, env=env, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{") and '"messages"' in x]
    assert lines, f"no figures (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1])
    print("\nchaos:", {k: v for k, v in out.items() if k != "problems"})
    return out


def test_every_message_was_accepted_and_the_faults_happened(figures):
    assert figures["messages"] == 300 and figures["rejected_by_api"] == 0
    assert figures["recipients"] >= 450
    # the run is only a proof if the faults were injected
    assert sum(figures["kills"].values()) >= 4, figures["kills"]
    assert len(set(figures["kills"]) - {"lambda_timeout"}) >= 3, figures["kills"]
    assert figures["duplicate_jobs"] >= 3 and figures["undeleted_jobs"] >= 3
    assert figures["write_failures"] >= 3
    states = figures["states"]
    assert states.get("delivered", 0) > figures["recipients"] // 2
    assert states.get("bounced", 0) > 0 and states.get("expired", 0) > 0


def test_no_recipient_lost(figures):
    assert figures["lost"] == 0, figures["problems"]
    assert sum(figures["states"].values()) == figures["recipients"]
    assert set(figures["states"]) <= {"delivered", "bounced", "expired", "suppressed"}, figures["states"]


def test_every_state_agrees_with_what_the_mx_did(figures):
    assert figures["wrong_state"] == 0, figures["problems"]


def test_second_copies_only_in_the_documented_crash_window(figures):
    assert figures["duplicates_out_of_window"] == 0, figures["problems"]


def test_dead_letter_queue_is_empty(figures):
    assert figures["dlq_depth"] == 0, figures["problems"]
