#!/usr/bin/env python3
"""bench/pushclient.py - clients for bench/push.sh (push delivery).

  pushclient.py latency SMTPPORT SINKPORT COUNT
      run a recording SMTP server on 127.0.0.1:SINKPORT (the office's local
      MTA, fed by odpull), then send COUNT messages to SMTPPORT one by one,
      each after the previous one reached the sink; print each latency
      (provider's 250 -> end of DATA at the local MTA) and p50/p99/max
  pushclient.py wait ODMRPORT N USER PASSWORD FLAGFILE
      open N ODMR sessions (EHLO, AUTH CRAM-MD5, XWAIT), 10 logins at a
      time (implicit TLS when PUSH_TLS is set in the environment); print "ready" once all wait; hold them until FLAGFILE goes;
      then count the 250 wake-ups (sessions woken by one message) for 30 s
  pushclient.py send SMTPPORT TAG
      one message, print the seconds until the 250
"""
import asyncio
import base64
import hashlib
import hmac
import os
import socket
import sys
import threading
import time


def smtp_send(port, tag):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("relay closed the connection")
            if line[3:4] != b"-":
                return line

    def cmd(t):
        s.sendall(t.encode() + b"\r\n")
        return reply()

    reply()
    cmd("EHLO bench.test")
    cmd("MAIL FROM:<bench@client.test>")
    r = cmd("RCPT TO:<user@example.org>")
    assert r.startswith(b"250"), r
    cmd("DATA")
    s.sendall(("Subject: %s\r\nMessage-ID: <%s@bench>\r\n\r\n" % (tag, tag)
        + "x" * 70 + "\r\n" * 1 + ".\r\n").encode())
    r = reply()
    t = time.time()
    assert r.startswith(b"250"), r
    cmd("QUIT")
    s.close()
    return t


class Sink:
    """Threaded SMTP server: records time.time() at each end of DATA by
    Subject."""

    def __init__(self, port):
        self.got = {}
        self.cv = threading.Condition()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(16)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.ls.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        f = c.makefile("rb")
        c.sendall(b"220 office.test ESMTP\r\n")
        subject = None
        while True:
            line = f.readline()
            if not line:
                return
            v = line[:4].upper()
            if v in (b"EHLO", b"HELO"):
                c.sendall(b"250-office.test\r\n250 8BITMIME\r\n")
            elif v == b"DATA":
                c.sendall(b"354 go\r\n")
                while True:
                    l = f.readline()
                    if not l or l == b".\r\n":
                        break
                    if l.lower().startswith(b"subject:"):
                        subject = l[8:].strip().decode()
                t = time.time()
                with self.cv:
                    self.got[subject] = t
                    self.cv.notify_all()
                c.sendall(b"250 ok\r\n")
            elif v == b"QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")

    def wait(self, tag, timeout):
        with self.cv:
            self.cv.wait_for(lambda: tag in self.got, timeout)
            return self.got.get(tag)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def latency(smtp_port, sink_port, count):
    sink = Sink(sink_port)
    lat = []
    lost = 0
    for i in range(count):
        tag = "push%06d" % i
        t0 = smtp_send(smtp_port, tag)
        t1 = sink.wait(tag, 120)
        if t1 is None:
            lost += 1
            continue
        lat.append((t1 - t0) * 1000)
    print("messages %d, arrived %d, p50 %.1f ms, p99 %.1f ms, max %.1f ms, "
        "mean %.1f ms" % (count, len(lat), pct(lat, 50), pct(lat, 99),
        max(lat), sum(lat) / len(lat)))
    time.sleep(1)
    extra = len(sink.got) - len(lat)
    print("duplicates or strays at the local MTA: %d" % extra)


async def one_waiter(port, user, password, sem, state, tls):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)

        async def reply():
            while True:
                line = await r.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return line

        await reply()
        w.write(b"EHLO bench.test\r\n")
        await reply()
        w.write(b"AUTH CRAM-MD5\r\n")
        ch = (await reply())[4:].strip()
        dig = hmac.new(password.encode(), base64.b64decode(ch),
            hashlib.md5).hexdigest()
        w.write(base64.b64encode(("%s %s" % (user, dig)).encode()) + b"\r\n")
        a = await reply()
        if not a.startswith(b"235"):
            raise ConnectionError("AUTH: %r" % a)
        w.write(b"XWAIT\r\n")
        await w.drain()
        state["waiting"] += 1
    line = await r.readline()
    if line.startswith(b"250"):
        state["woken"] += 1
        state["last"] = time.time()
    state["conns"].append(w)


async def waiters(port, n, user, password, flag):
    sem = asyncio.Semaphore(10)
    state = {"waiting": 0, "woken": 0, "last": 0, "conns": []}
    tls = None
    if os.environ.get("PUSH_TLS"):
        # implicit TLS (odmrs_listen), certificate not checked: memory only
        import ssl
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    tasks = [asyncio.ensure_future(one_waiter(port, user, password, sem,
        state, tls)) for _ in range(n)]
    while state["waiting"] < n:
        await asyncio.sleep(0.2)
        bad = [t for t in tasks if t.done() and t.exception()]
        if bad:
            print("error: %r" % bad[0].exception(), flush=True)
            return
    await asyncio.sleep(0.5)
    print("ready %d" % state["waiting"], flush=True)
    while os.path.exists(flag):
        await asyncio.sleep(0.2)
    t0 = time.time()
    deadline = t0 + 30
    while state["woken"] < n and time.time() < deadline:
        await asyncio.sleep(0.05)
    print("woken %d of %d; last wake-up %.0f ms after the flag went" % (
        state["woken"], n, (state["last"] - t0) * 1000 if state["last"]
        else -1), flush=True)
    for t in tasks:
        t.cancel()


def main():
    a = sys.argv[1:]
    if a[0] == "latency":
        latency(int(a[1]), int(a[2]), int(a[3]))
    elif a[0] == "wait":
        asyncio.run(waiters(int(a[1]), int(a[2]), a[3], a[4], a[5]))
    elif a[0] == "send":
        t0 = time.time()
        smtp_send(int(a[1]), a[2])
        print("%.3f" % (time.time() - t0))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
