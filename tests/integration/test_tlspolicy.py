#!/usr/bin/env python3
"""Outbound TLS policy (odrelay.conf(5) tls, tls_ca_file, tls_fingerprint):
verify with right and wrong names and CAs, fingerprints (certificate and
public key), encrypt against a server without STARTTLS, a man in the
middle that strips STARTTLS, and a bounce that names the TLS reason.

Certificates and CAs are made by the test with openssl; the downstream
server is the recording sink with STARTTLS; names resolve through a
dnsmasq started by the test."""

import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, Skip, check, fail, free_port, json_find,
    queued_id, run_tests, send_message)
from sink import Sink
from dns import Dns

SENDER = "s@sender.test"


# --- certificates ---------------------------------------------------------

def openssl(*args, cwd=None):
	r = subprocess.run(["openssl"] + list(args), cwd=cwd,
	    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
	if r.returncode != 0:
		raise Skip("openssl %s failed: %s" % (args[0],
		    r.stdout.decode(errors="replace")))
	return r.stdout


def make_ca(dirpath, name):
	key = os.path.join(dirpath, name + ".key")
	crt = os.path.join(dirpath, name + ".pem")
	openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
	    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=%s" % name,
	    "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
	    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
	    "-keyout", key, "-out", crt)
	return crt, key


def make_leaf(dirpath, name, ca, san):
	"""A server certificate for san ("DNS:x,IP:y") signed by ca."""
	key = os.path.join(dirpath, name + ".key")
	csr = os.path.join(dirpath, name + ".csr")
	crt = os.path.join(dirpath, name + ".pem")
	ext = os.path.join(dirpath, name + ".ext")
	with open(ext, "w") as f:
		f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
	openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
	    "-nodes", "-subj", "/CN=%s" % name, "-keyout", key, "-out", csr)
	openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
	    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
	os.chmod(key, 0o644)
	return crt, key


def cert_sha256(pem):
	with open(pem) as f:
		der = ssl.PEM_cert_to_DER_cert(f.read())
	return hashlib.sha256(der).hexdigest()


def pubkey_sha256(pem):
	spki = subprocess.run("openssl x509 -in '%s' -pubkey -noout | "
	    "openssl pkey -pubin -outform DER" % pem, shell=True,
	    stdout=subprocess.PIPE, timeout=30).stdout
	check(len(spki) > 50, "no public key from %s" % pem)
	return hashlib.sha256(spki).hexdigest()


def colons(hexs):
	return ":".join(hexs[i:i + 2] for i in range(0, len(hexs), 2)).upper()


class Pki:
	"""Two CAs; mx.test (DNS:mx.test, IP:127.0.0.1) signed by the first."""

	def __init__(self):
		self.dir = tempfile.mkdtemp(prefix="odrelay-tlspol-")
		os.chmod(self.dir, 0o755)
		self.ca = make_ca(self.dir, "ca1")
		self.other_ca = make_ca(self.dir, "ca2")
		self.mx = make_leaf(self.dir, "mx", self.ca,
		    "DNS:mx.test,IP:127.0.0.1")


PKI = None


def pki():
	global PKI
	if PKI is None:
		PKI = Pki()
	return PKI


# --- helpers ----------------------------------------------------------------

class TlsFixture(Fixture):
	"""A Fixture whose daemon asks dnsmasq on dns_port."""

	def __init__(self, name, dns_port=None, **kw):
		super().__init__(name, start=False, **kw)
		d = self.d
		if dns_port is not None:
			d.text = re.sub(r"(?m)^dns_servers = .*$",
			    "dns_servers = 127.0.0.1:%d" % dns_port, d.text)
		with open(d.conf, "w") as f:
			f.write(d.text)
		self.start = True


def tls_sink():
	p = pki()
	return Sink(starttls=True, cert=p.mx[0], key=p.mx[1])


def queue_one(d, rcpt):
	code, text = send_message(d.smtp_port, SENDER, [rcpt],
	    "Subject: tls policy\r\n\r\nhello %s\r\n" % rcpt)
	check(code == 250, "not accepted: %s %s" % (code, text))
	qid = queued_id(text)
	check(qid, "no queue id in %r" % text)
	return qid


def flush(d, domain):
	r = d.ctl("flush", domain)
	check(r.returncode == 0, "flush %s: %s %s" % (domain, r.out, r.err))


def last_error(d, qid):
	m = json_find(d.queue_json(), qid)
	if m is None:
		return None
	return m.get("last_error") or ""


def wait_error(d, qid, pattern, bound=10.0):
	"""The message is still queued with a last error matching pattern."""
	deadline = time.time() + bound
	err = None
	while time.time() < deadline:
		err = last_error(d, qid)
		check(err is not None, "message %s left the queue" % qid)
		if re.search(pattern, err):
			return err
		time.sleep(0.1)
	fail("last error of %s is %r, expected /%s/" % (qid, err, pattern))


def wait_log(d, pattern, bound=10.0):
	deadline = time.time() + bound
	while time.time() < deadline:
		m = re.search(pattern, d.log_text())
		if m:
			return m
		time.sleep(0.1)
	fail("no log line matching /%s/" % pattern)


def no_mail(sink):
	check(not any(t.mail_from is not None for t in sink.txns),
	    "the sink received a transaction: %s" % sink.txns)


def domain(name, port, host="[127.0.0.1]", **keys):
	s = "[domain %s]\nhold = yes\nroute = %s:%d\n" % (name, host, port)
	for k, v in keys.items():
		s += "%s = %s\n" % (k, v)
	return s + "\n"


# --- tests ---------------------------------------------------------------

def test_verify_address_route():
	"""tls = verify, route by address: checked against the IP names;
	right CA delivers (logged verified=ca), a wrong CA defers with 4.7.5
	and nothing is sent."""
	p = pki()
	with tls_sink() as sink:
		doms = (domain("good.test", sink.port, tls="verify",
		    tls_ca_file=p.ca[0]) + domain("badca.test", sink.port,
		    tls="verify", tls_ca_file=p.other_ca[0]))
		with TlsFixture("tlspol-verify-ip", domains=doms) as d:
			q1 = queue_one(d, "a@good.test")
			q2 = queue_one(d, "b@badca.test")
			flush(d, "good.test")
			sink.wait_accepted(1)
			check(sink.accepted()[0].tls, "delivered without TLS")
			wait_log(d, r"good\.test: delivery run ended.*tls=TLSv1\.[23], "
			    r"verified=ca")
			flush(d, "badca.test")
			err = wait_error(d, q2, r"^451 4\.7\.5 ")
			check("not verified" in err, "reason not given: %r" % err)
			check(len(sink.accepted()) == 1, "mail sent despite a bad CA: %s"
			    % sink.txns)
			check(last_error(d, q1) is None, "delivered message still queued")
			wait_log(d, r"badca\.test: delivery run ended.*verified=failed.*4\.7\.5")
			stats = d.ctl("stats").out
			for o in ("verified", "failed"):
				check(re.search(r'odrelay_delivery_tls_total\{outcome="%s"\}'
				    r'\D+1\b' % o, stats), "no %s TLS outcome counted:\n%s"
				    % (o, stats))


def test_verify_names():
	"""tls = verify, route by name: the certificate's DNS names must
	match the route's host name (mx.test matches, other.test does not)."""
	p = pki()
	with tls_sink() as sink, Dns(hosts=[("mx.test", "127.0.0.1"),
	    ("other.test", "127.0.0.1")]) as dns:
		doms = (domain("right.test", sink.port, host="mx.test", tls="verify",
		    tls_ca_file=p.ca[0]) + domain("wrong.test", sink.port,
		    host="other.test", tls="verify", tls_ca_file=p.ca[0]))
		with TlsFixture("tlspol-verify-name", dns_port=dns.port,
		    domains=doms) as d:
			queue_one(d, "a@right.test")
			q2 = queue_one(d, "b@wrong.test")
			flush(d, "right.test")
			sink.wait_accepted(1)
			flush(d, "wrong.test")
			err = wait_error(d, q2, r"^451 4\.7\.5 ")
			check("other.test" in err, "host not named: %r" % err)
			time.sleep(0.3)
			check(len(sink.accepted()) == 1, "mail sent to a wrong name: %s"
			    % sink.txns)


def test_fingerprint():
	"""tls = fingerprint: the certificate's SHA-256 (with colons) and the
	public key's SHA-256 both match; a wrong pin defers with 4.7.5."""
	p = pki()
	cfp = "sha256:" + colons(cert_sha256(p.mx[0]))
	kfp = "pubkey-sha256:" + pubkey_sha256(p.mx[0])
	bad = "sha256:" + "00" * 32
	with tls_sink() as sink:
		doms = (domain("cert.test", sink.port, tls="fingerprint",
		    tls_fingerprint=bad + " " + cfp) +
		    domain("key.test", sink.port, tls="fingerprint",
		    tls_fingerprint=kfp) +
		    domain("wrong.test", sink.port, tls="fingerprint",
		    tls_fingerprint=bad + ", pubkey-sha256:" + "11" * 32))
		with TlsFixture("tlspol-fp", domains=doms) as d:
			queue_one(d, "a@cert.test")
			queue_one(d, "b@key.test")
			q3 = queue_one(d, "c@wrong.test")
			flush(d, "cert.test")
			sink.wait_accepted(1)
			flush(d, "key.test")
			sink.wait_accepted(2)
			wait_log(d, r"key\.test: delivery run ended.*verified=fingerprint")
			flush(d, "wrong.test")
			err = wait_error(d, q3, r"^451 4\.7\.5 .*tls_fingerprint")
			time.sleep(0.3)
			check(len(sink.accepted()) == 2, "mail sent to a wrong pin: %s"
			    % sink.txns)


def test_bad_fingerprint_config():
	"""A malformed pin is a configuration error with file and line."""
	d = Fixture("tlspol-badfp", start=False,
	    domains="[domain x.test]\ntls = fingerprint\n"
	    "tls_fingerprint = sha256:abcd\n").d
	try:
		r = subprocess.run([os.path.join(os.environ.get("top_builddir",
		    "."), "odrelayd"), "-n", "-c", d.conf], stdout=subprocess.PIPE,
		    stderr=subprocess.STDOUT, timeout=30)
		out = r.stdout.decode(errors="replace")
		check(r.returncode != 0, "bad fingerprint accepted")
		check(re.search(r"odrelay\.conf:\d+: .*tls_fingerprint", out),
		    "no FILE:LINE message: %s" % out)
	finally:
		d.cleanup(keep=False)


def test_encrypt_without_starttls():
	"""tls = encrypt against a server that does not offer STARTTLS:
	deferred with 4.7.4, nothing sent in clear; tls = none against a
	STARTTLS server sends in clear."""
	with Sink() as plain, tls_sink() as tsink:
		doms = (domain("enc.test", plain.port, tls="encrypt") +
		    domain("none.test", tsink.port, tls="none"))
		with TlsFixture("tlspol-encrypt", domains=doms) as d:
			q = queue_one(d, "a@enc.test")
			queue_one(d, "b@none.test")
			flush(d, "enc.test")
			err = wait_error(d, q, r"^451 4\.7\.4 ")
			check("STARTTLS" in err, "reason: %r" % err)
			no_mail(plain)
			flush(d, "none.test")
			tsink.wait_accepted(1)
			check(not tsink.accepted()[0].tls, "tls = none used TLS")


class StripProxy:
	"""A man in the middle: relays bytes between the relay and the real
	server but removes STARTTLS from the EHLO reply (and records what
	the client sent through it)."""

	def __init__(self, target_port):
		self.target = target_port
		self.ls = socket.socket()
		self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.ls.bind(("127.0.0.1", 0))
		self.ls.listen(4)
		self.port = self.ls.getsockname()[1]
		self.client_bytes = b""
		self.stripped = 0
		self.stop_ev = threading.Event()
		self.t = threading.Thread(target=self.run, daemon=True)
		self.t.start()

	def run(self):
		self.ls.settimeout(0.2)
		while not self.stop_ev.is_set():
			try:
				c, _ = self.ls.accept()
			except OSError:
				continue
			threading.Thread(target=self.conn, args=(c,), daemon=True).start()

	def conn(self, c):
		s = socket.create_connection(("127.0.0.1", self.target), timeout=10)
		c.settimeout(10)

		def up():
			try:
				while True:
					b = c.recv(4096)
					if not b:
						break
					self.client_bytes += b
					s.sendall(b)
			except OSError:
				pass
			try:
				s.shutdown(socket.SHUT_WR)
			except OSError:
				pass
		th = threading.Thread(target=up, daemon=True)
		th.start()
		try:
			while True:
				b = s.recv(4096)
				if not b:
					break
				if b"STARTTLS" in b:
					b = b.replace(b"STARTTLS", b"XXXXXXXX")
					self.stripped += 1
				c.sendall(b)
		except OSError:
			pass
		th.join(5)
		c.close()
		s.close()

	def close(self):
		self.stop_ev.set()
		self.ls.close()


def test_stripping_proxy_defers():
	"""A proxy that strips STARTTLS: tls = encrypt defers (4.7.4) and no
	MAIL command crosses it in clear."""
	with tls_sink() as sink:
		proxy = StripProxy(sink.port)
		try:
			doms = domain("mitm.test", proxy.port, tls="encrypt")
			with TlsFixture("tlspol-strip", domains=doms) as d:
				q = queue_one(d, "a@mitm.test")
				flush(d, "mitm.test")
				wait_error(d, q, r"^451 4\.7\.4 .*did not offer STARTTLS")
				check(proxy.stripped >= 1, "the proxy never saw STARTTLS")
				check(b"MAIL FROM" not in proxy.client_bytes.upper(),
				    "MAIL sent in clear through the proxy: %r"
				    % proxy.client_bytes[:500])
				no_mail(sink)
		finally:
			proxy.close()


def test_bounce_names_tls_reason():
	"""After queue_lifetime the bounce names the TLS reason (4.7.4)."""
	with Sink() as plain, Sink() as bsink:
		doms = ("[domain backup.test]\nhold = no\nroute = [127.0.0.1]:%d\n"
		    "tls = encrypt\nqueue_lifetime = 2s\n\n"
		    "[domain sender.test]\nhold = no\nroute = [127.0.0.1]:%d\n\n"
		    % (plain.port, bsink.port))
		with TlsFixture("tlspol-bounce", domains=doms,
		    extra="retry_min = 1h\nretry_max = 2h\n") as d:
			queue_one(d, "a@backup.test")
			bsink.wait_accepted(1, timeout=20)
			data = bsink.accepted()[0].data.decode("latin-1")
			check("4.7.4" in data and "STARTTLS" in data,
			    "bounce without the TLS reason:\n" + data[:3000])
			no_mail(plain)


if __name__ == "__main__":
	try:
		run_tests([test_verify_address_route, test_verify_names,
		    test_fingerprint, test_bad_fingerprint_config,
		    test_encrypt_without_starttls, test_stripping_proxy_defers,
		    test_bounce_names_tls_reason], "tlspolicy")
	finally:
		if PKI is not None:
			import shutil
			shutil.rmtree(PKI.dir, ignore_errors=True)
