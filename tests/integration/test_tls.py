#!/usr/bin/env python3
"""STARTTLS: openssl s_client, smtplib, and the STARTTLS injection case."""

import os
import select
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, queued_id, run, run_tests)


def client_ctx(d):
	ctx = ssl.create_default_context(cafile=d.cert)
	ctx.check_hostname = True
	return ctx


def test_s_client():
	with Fixture("tls-sclient", tls=True) as d:
		# Interactive: DATA's body may only follow its 354 (RFC 2920).
		# -quiet implies -ign_eof, so "QUIT"/"RCPT" are not taken as
		# s_client's Q/R command letters.
		p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp",
		    "-connect", "127.0.0.1:%d" % d.smtp_port, "-servername", "localhost",
		    "-CAfile", d.cert, "-verify_return_error", "-quiet"],
		    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
		out = ""
		try:
			buf = b""

			def final(code):
				# Raw reads: select() on a buffered pipe reader would miss
				# lines already in its buffer.
				nonlocal out, buf
				end = time.time() + 10
				while time.time() < end:
					while b"\n" in buf:
						line, buf = buf.split(b"\n", 1)
						line = line.decode(errors="replace").rstrip("\r")
						out += line + "\n"
						if line[:4] == code + " ":
							return
					r, _, _ = select.select([p.stdout], [], [],
					    max(0, end - time.time()))
					if not r:
						break
					data = os.read(p.stdout.fileno(), 65536)
					if not data:
						break
					buf += data
				fail("s_client: no %s reply; stdout:\n%s" % (code, out))

			def say(line):
				p.stdin.write(line.encode() + b"\r\n")
				p.stdin.flush()

			# s_client already sent its own EHLO and STARTTLS.
			say("EHLO client.test")
			final("250")
			say("MAIL FROM:<t@client.test>")
			final("250")
			say("RCPT TO:<tls@example.org>")
			final("250")
			say("DATA")
			final("354")
			say("Subject: via s_client\r\n\r\nhello over tls\r\n.")
			final("250")
			check(queued_id(out), "no 'queued as' through s_client:\n" + out)
			say("QUIT")
			try:
				final("221")
			except Exception:
				fail("QUIT inside TLS (s_client): no 221 reply before the "
				    "connection closed")
		finally:
			try:
				p.stdin.close()
			except OSError:
				pass
			try:
				p.wait(5)
			except subprocess.TimeoutExpired:
				p.kill()
				p.wait()
		check("queued as" in out, "no 'queued as' through s_client:\n" + out)
		qid = queued_id(out)
		s = d.ctl_ok("show", qid)
		check("tls@example.org" in s.out, "show lacks the recipient:\n" + s.out)


def test_smtplib_starttls():
	with Fixture("tls-smtplib", tls=True) as d:
		smtp = smtplib.SMTP("127.0.0.1", d.smtp_port, local_hostname="client.test",
		    timeout=10)
		smtp.ehlo()
		check(smtp.has_extn("starttls"), "EHLO lacks STARTTLS: %r" % smtp.esmtp_features)
		code, _ = smtp.starttls(context=client_ctx(d))
		check(code == 220, "STARTTLS reply %s" % code)
		check(isinstance(smtp.sock, ssl.SSLSocket), "socket is not TLS")
		code, _ = smtp.ehlo()
		check(code == 250, "EHLO after TLS: %s" % code)
		check(not smtp.has_extn("starttls"),
		    "STARTTLS still advertised inside TLS")
		code, t = smtp.docmd("STARTTLS")
		check(code >= 500, "second STARTTLS: %s %r" % (code, t))
		smtp.mail("t@client.test")
		smtp.rcpt("tls2@example.org")
		code, t = smtp.data(b"Subject: smtplib tls\r\n\r\nhello\r\n")
		check(code == 250, "DATA over TLS: %s %r" % (code, t))
		qid = queued_id(t.decode())
		s = d.ctl_ok("show", qid)
		# The Received header should say the session was encrypted.
		check("TLS" in s.out or "ESMTPS" in s.out,
		    "Received header does not record TLS (ESMTPS):\n" + s.out)
		check(smtp.noop()[0] == 250, "NOOP after DATA inside TLS")
		try:
			code, t = smtp.docmd("QUIT")
		except smtplib.SMTPServerDisconnected:
			fail("QUIT inside TLS: connection closed without the 221 reply")
		check(code == 221, "QUIT inside TLS: %s %r" % (code, t))
		smtp.close()


def test_starttls_injection():
	"""Plaintext pipelined after STARTTLS must be discarded, not run in TLS."""
	with Fixture("tls-inject", tls=True) as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		c.send(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<inject@evil.test>\r\n")
		c.expect(220, what="STARTTLS")
		ctx = client_ctx(d)
		tls = ctx.wrap_socket(c.s, server_hostname="localhost")
		tls.settimeout(3)
		tls.sendall(b"EHLO client.test\r\n")
		data = b""
		try:
			while not (b"\r\n250 " in b"\r\n" + data):
				d_ = tls.recv(65536)
				if not d_:
					break
				data += d_
		except socket.timeout:
			pass
		# Read whatever else arrives shortly: there must be nothing.
		tls.settimeout(0.7)
		try:
			while True:
				d_ = tls.recv(65536)
				if not d_:
					break
				data += d_
		except (socket.timeout, ssl.SSLError):
			pass
		text = data.decode(errors="replace")
		lines = [l for l in text.split("\r\n") if l]
		check(lines and lines[0].startswith("250"),
		    "first reply inside TLS is not the EHLO 250: %r" % text)
		finals = [l for l in lines if len(l) >= 4 and l[3] == " "]
		check(len(finals) == 1, "injected plaintext commands were answered "
		    "inside TLS: %r" % text)
		tls.sendall(b"QUIT\r\n")
		tls.close()


def test_auth_after_starttls():
	"""spec.md: AUTH on the SMTP listener, after TLS only; no relaying."""
	with Fixture("tls-auth", tls=True, start=False) as d:
		r = d.ctl("passwd", "add", "demo", "example.org", input=b"demo\n")
		check(r.returncode == 0, "passwd add: %s%s" % (r.out, r.err))
		d.start()
		smtp = smtplib.SMTP("127.0.0.1", d.smtp_port, local_hostname="client.test",
		    timeout=10)
		smtp.ehlo()
		check(not smtp.has_extn("auth"), "AUTH offered before TLS")
		code, t = smtp.docmd("AUTH", "PLAIN AGRlbW8AZGVtbw==")
		check(code == 530, "AUTH before TLS: %s %r" % (code, t))
		smtp.starttls(context=client_ctx(d))
		smtp.ehlo()
		check(smtp.has_extn("auth"), "no AUTH after TLS: %r" % smtp.esmtp_features)
		mechs = smtp.esmtp_features.get("auth", "").upper().split()
		for m in ("CRAM-MD5", "PLAIN", "LOGIN", "SCRAM-SHA-256"):
			check(m in mechs, "%s missing from AUTH %r" % (m, mechs))
		code, t = smtp.docmd("AUTH", "PLAIN AGRlbW8Ad3Jvbmc=")
		check(code == 535, "wrong password: %s %r" % (code, t))
		smtp.user, smtp.password = "demo", "demo"
		code, t = smtp.auth("CRAM-MD5", smtp.auth_cram_md5)
		check(code == 235, "AUTH CRAM-MD5: %s %r" % (code, t))
		code, t = smtp.docmd("AUTH", "PLAIN AGRlbW8AZGVtbw==")
		check(code == 503, "second AUTH: %s %r" % (code, t))
		# Authenticated or not, never a relay.
		smtp.mail("demo@client.test")
		code, t = smtp.rcpt("someone@other.net")
		check(code == 550, "relay after AUTH: %s %r" % (code, t))
		smtp.rset()
		smtp.mail("demo@client.test")
		smtp.rcpt("auth@example.org")
		code, t = smtp.data(b"Subject: auth\r\n\r\nhello\r\n")
		check(code == 250, "DATA after AUTH: %s %r" % (code, t))
		qid = queued_id(t.decode())
		s = d.ctl_ok("show", qid)
		check("ESMTPSA" in s.out, "Received header lacks ESMTPSA:\n" + s.out)
		smtp.quit()


if __name__ == "__main__":
	run_tests([test_s_client, test_smtplib_starttls, test_starttls_injection,
	    test_auth_after_starttls],
	    "tls")
