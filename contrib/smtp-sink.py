#!/usr/bin/env python3
"""A tiny receiving SMTP server for the demo: accepts every message and
prints it (envelope and text) on standard output. Python 3 standard
library only; not for production (no TLS, no limits beyond a line and a
message size, everything accepted).

    python3 contrib/smtp-sink.py [ADDRESS] [PORT]    (127.0.0.1 2526)

Stop it with Ctrl-C.
"""

import asyncio
import sys

MAX_LINE = 4096
MAX_MESSAGE = 50 * 1024 * 1024


class Session:
	def __init__(self, reader, writer):
		self.r = reader
		self.w = writer
		self.reset()

	def reset(self):
		self.sender = None
		self.rcpts = []

	async def reply(self, text):
		self.w.write(text.encode() + b"\r\n")
		await self.w.drain()

	async def line(self):
		data = await self.r.readline()
		if not data:
			return None
		if len(data) > MAX_LINE:
			raise ValueError("line too long")
		return data.rstrip(b"\r\n")

	async def data(self):
		"""The message up to the lone dot, dot-unstuffed."""
		out, size = [], 0
		while True:
			data = await self.r.readline()
			if not data:
				return None
			if data in (b".\r\n", b".\n"):
				return b"".join(out)
			if data.startswith(b"."):
				data = data[1:]
			size += len(data)
			if size <= MAX_MESSAGE:
				out.append(data)

	def show(self, text):
		print("=" * 72)
		print("message from <%s> to %s" % (self.sender,
		    ", ".join("<%s>" % r for r in self.rcpts)))
		print("-" * 72)
		sys.stdout.write(text.decode("utf-8", "replace").replace("\r\n",
		    "\n"))
		print("=" * 72, flush=True)

	async def run(self):
		await self.reply("220 smtp-sink.demo ESMTP ready")
		while True:
			try:
				cmd = await self.line()
			except ValueError:
				await self.reply("500 5.5.2 Line too long")
				continue
			if cmd is None:
				return
			verb = cmd[:4].upper()
			arg = cmd[5:].decode("utf-8", "replace")
			if verb == b"EHLO":
				await self.reply("250-smtp-sink.demo\r\n250-8BITMIME\r\n"
				    "250-SMTPUTF8\r\n250 PIPELINING")
			elif verb == b"HELO":
				await self.reply("250 smtp-sink.demo")
			elif verb == b"MAIL":
				self.reset()
				self.sender = addr(arg)
				await self.reply("250 2.1.0 Ok")
			elif verb == b"RCPT":
				if self.sender is None:
					await self.reply("503 5.5.1 MAIL first")
					continue
				self.rcpts.append(addr(arg))
				await self.reply("250 2.1.5 Ok")
			elif verb == b"DATA":
				if not self.rcpts:
					await self.reply("503 5.5.1 RCPT first")
					continue
				await self.reply("354 End data with <CR><LF>.<CR><LF>")
				text = await self.data()
				if text is None:
					return
				self.show(text)
				await self.reply("250 2.0.0 Ok: printed")
				self.reset()
			elif verb == b"RSET":
				self.reset()
				await self.reply("250 2.0.0 Ok")
			elif verb == b"NOOP":
				await self.reply("250 2.0.0 Ok")
			elif verb == b"QUIT":
				await self.reply("221 2.0.0 Bye")
				return
			else:
				await self.reply("502 5.5.1 Command not implemented")


def addr(arg):
	"""The address between < and > of 'FROM:<a@b> ...' / 'TO:<...>'."""
	lt, gt = arg.find("<"), arg.find(">")
	if lt < 0 or gt < lt:
		return arg.partition(":")[2].strip()
	return arg[lt + 1:gt]


async def serve(session_reader, session_writer):
	try:
		await Session(session_reader, session_writer).run()
	except (ConnectionError, asyncio.IncompleteReadError, ValueError):
		pass
	finally:
		session_writer.close()


async def main(host, port):
	# Long message lines are read whole; commands are checked against
	# MAX_LINE.
	server = await asyncio.start_server(serve, host, port, limit=1 << 20)
	print("smtp-sink: listening on %s port %d; messages are printed here"
	    % (host, port), flush=True)
	async with server:
		await server.serve_forever()


if __name__ == "__main__":
	if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
		print(__doc__.strip())
		sys.exit(0)
	h = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
	p = int(sys.argv[2]) if len(sys.argv) > 2 else 2526
	try:
		asyncio.run(main(h, p))
	except KeyboardInterrupt:
		pass
