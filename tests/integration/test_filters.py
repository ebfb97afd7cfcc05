#!/usr/bin/env python3
"""Real filters over the milter protocol (issue 10): rspamd's proxy
worker in milter mode and OpenDKIM signing, both started here in the
foreground and applied in that order.

GTUBE is refused with rspamd's own reply; a clean message is accepted
with rspamd's headers added and a DKIM-Signature that OpenDKIM's
verifier accepts (and rejects once the message is altered).
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Fixture, check, queued_id, run_tests, send_message
from milters import OpenDKIM, Rspamd

GTUBE = (b"From: Alice <alice@client.test>\r\nTo: x@example.org\r\n"
    b"Subject: gtube\r\nMessage-ID: <gtube@client.test>\r\n"
    b"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n"
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
CLEAN = (b"From: Alice <alice@client.test>\r\nTo: x@example.org\r\n"
    b"Subject: lunch\r\n\tfolded subject line\r\n"
    b"Message-ID: <clean@client.test>\r\n"
    b"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n"
    b"Shall we meet at noon?\r\n.a line with a dot\r\n\r\n-- \r\nAlice\r\n")


def test_rspamd_and_opendkim(reuse="no"):
	with Rspamd() as rs, OpenDKIM("client.test") as dk, Fixture("filters",
	    extra="milters = %s %s\nmilter_content_timeout = 20s\n"
	    "milter_reuse = %s\n" % (rs.spec, dk.spec, reuse)) as d:
		code, text = send_message(d.smtp_port, "alice@client.test",
		    ["x@example.org"], GTUBE)
		check(code == 554 and "5.7.1 Gtube pattern" in text,
		    "GTUBE: expected rspamd's 554 5.7.1 Gtube pattern, got %s %r"
		    % (code, text))
		code, text = send_message(d.smtp_port, "alice@client.test",
		    ["x@example.org"], CLEAN)
		qid = queued_id(text)
		check(code == 250 and qid, "clean message: %s %r" % (code, text))
		stored = d.body(qid)
		hdrs = stored.partition(b"\r\n\r\n")[0].decode(
		    errors="replace").replace("\r\n", "\n")
		check(re.search(r"(?m)^X-Spamd-Result: default: False", hdrs),
		    "no X-Spamd-Result header from rspamd:\n" + hdrs)
		check(re.search(r"(?m)^X-Rspamd-Queue-Id: %s$" % qid, hdrs),
		    "rspamd did not get our queue id (macro i):\n" + hdrs)
		check(re.search(r"(?m)^DKIM-Signature: .*d=client\.test", hdrs),
		    "no DKIM-Signature from OpenDKIM:\n" + hdrs)
		check(stored.endswith(CLEAN.partition(b"\r\n\r\n")[2]),
		    "body altered")
		v = dk.verify(stored)
		check("verification" in v and "succeeded" in v,
		    "OpenDKIM does not verify the relayed message: " + v)
		v = dk.verify(stored.replace(b"Shall we", b"Shall We"))
		check("failed" in v, "an altered message still verifies: " + v)
		log = d.log_text()
		check(re.search(r"%s: milter inet:127\.0\.0\.1:%d: header inserted: "
		    r"DKIM-Signature" % (qid, dk.port), log),
		    "no log line for the DKIM header")
		check(re.search(r"milter-reject: END-OF-MESSAGE .*Gtube pattern", log),
		    "no log line for the GTUBE refusal")
		if reuse == "yes":
			# rspamd's connection serves the second session; OpenDKIM
			# (SMFIP_HDR_LEADSPC, lost at QUIT_NC) gets a new one
			check(re.search(r"milter inet:127\.0\.0\.1:%d: connection "
			    r"reused" % rs.port, log), "rspamd's connection not reused")
			check(not re.search(r"milter inet:127\.0\.0\.1:%d: connection "
			    r"reused" % dk.port, log), "OpenDKIM's connection reused")


def test_rspamd_and_opendkim_reuse():
	"""The same with milter_reuse = yes."""
	test_rspamd_and_opendkim("yes")


if __name__ == "__main__":
	run_tests([test_rspamd_and_opendkim, test_rspamd_and_opendkim_reuse],
	    "filters")
