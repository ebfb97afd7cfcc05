#!/usr/bin/env python3
"""bench/smtpclient.py - small SMTP clients for the bench scripts.

  smtpclient.py big PORT MBYTES        send one message of MBYTES MiB (streamed,
                                       never held in memory), print the reply
  smtpclient.py idle PORT N SECONDS PIDFILE
                                       open N connections, read each greeting and
                                       EHLO, write "ready" to stdout, hold them until
                                       PIDFILE disappears or SECONDS pass
  smtpclient.py etrn PORT DOMAIN SINK COUNT TIMEOUT
                                       run SINK (an smtp-sink -c command line, in
                                       one string), send ETRN DOMAIN, print the
                                       seconds until the sink counted COUNT messages,
                                       the final count 3 s later, first-message time
"""
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import time


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("connection closed")
        lines.append(line.decode("latin-1").rstrip())
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def cmd(s, f, text):
    s.sendall(text.encode() + b"\r\n")
    return reply(f)


def big(port, mbytes):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    reply(f)
    cmd(s, f, "EHLO client.test")
    total = mbytes * 1024 * 1024
    r = cmd(s, f, "MAIL FROM:<big@client.test> SIZE=%d" % total)
    assert r[-1].startswith("250"), r
    r = cmd(s, f, "RCPT TO:<big@example.org>")
    assert r[-1].startswith("250"), r
    r = cmd(s, f, "DATA")
    assert r[-1].startswith("354"), r
    hdr = b"From: big@client.test\r\nTo: big@example.org\r\nSubject: big\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    chunk = line * (65536 // len(line))
    s.sendall(hdr)
    sent = len(hdr)
    t0 = time.time()
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    s.sendall(b".\r\n")
    r = reply(f)
    t1 = time.time()
    cmd(s, f, "QUIT")
    print("%d bytes, %.2fs, reply: %s" % (sent, t1 - t0, r[-1]))
    return 0 if r[-1].startswith("250") else 1


def idle(port, n, seconds, pidfile):
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        g = reply(f)
        if not g[-1].startswith("220"):
            raise SystemExit("connection %d: %s" % (i, g))
        r = cmd(s, f, "EHLO client%d.test" % i)
        if not r[-1].startswith("250"):
            raise SystemExit("connection %d: %s" % (i, r))
        conns.append((s, f))
    print("ready", flush=True)
    end = time.time() + seconds
    while time.time() < end and os.path.exists(pidfile):
        time.sleep(0.1)
    alive = 0
    for s, f in conns:
        try:
            if cmd(s, f, "NOOP")[-1].startswith("250"):
                alive += 1
        except (OSError, SystemExit):
            pass
        s.close()
    print("alive at the end: %d of %d" % (alive, n), flush=True)
    return 0


def etrn(port, domain, sinkcmd, count, timeout):
    sink = subprocess.Popen(shlex.split(sinkcmd), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        # the sink must listen before ETRN
        m = re.search(r":(\d+)", sinkcmd)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", int(m.group(1))), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        reply(f)
        cmd(s, f, "EHLO client.test")
        t0 = time.time()
        r = cmd(s, f, "ETRN " + domain)
        cmd(s, f, "QUIT")
        s.close()
        # the connecting probe above counts as a session, not as mail
        got = 0
        buf = b""
        first = None
        fd = sink.stdout.fileno()
        while got < count and time.time() - t0 < timeout:
            rd, _, _ = select.select([fd], [], [], 0.5)
            if not rd:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            buf = (buf + data)[-256:]
            ms = re.findall(rb"mesg=(\d+)", buf)
            if ms:
                got = int(ms[-1])
                if first is None and got > 0:
                    first = time.time() - t0
        t1 = time.time()
        # keep counting a little: more than COUNT means duplicates
        end = time.time() + 3
        while time.time() < end:
            rd, _, _ = select.select([fd], [], [], 0.2)
            if not rd:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            buf = (buf + data)[-256:]
            ms = re.findall(rb"mesg=(\d+)", buf)
            if ms:
                got = int(ms[-1])
        print("%.3f %d %s first=%.3f reply=%s" % (
            t1 - t0, got, "ok" if got == count else
            ("DUPLICATES" if got > count else "TIMEOUT"),
            first if first is not None else -1, r[-1].replace(" ", "_")))
        return 0 if got == count else 1
    finally:
        sink.terminate()
        sink.wait()


def main():
    a = sys.argv[1:]
    if a[:1] == ["big"]:
        return big(int(a[1]), int(a[2]))
    if a[:1] == ["idle"]:
        return idle(int(a[1]), int(a[2]), float(a[3]), a[4])
    if a[:1] == ["etrn"]:
        return etrn(int(a[1]), a[2], a[3], int(a[4]), float(a[5]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
