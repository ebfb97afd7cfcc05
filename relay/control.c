/*
 * control - Unix-socket command channel between odrelayctl and odrelayd.
 *
 * Trust: the socket is mode 0600 in the queue directory, so only the queue
 * owner (and root) can connect; input is still bounded (one line of at
 * most CONTROL_LINE_MAX octets) and the session times out.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "control.h"
#include "ctlclient.h"
#include "lineio.h"
#include "log.h"
#include "util.h"
#include "xmalloc.h"
#include "turnwatch.h"

#define CONTROL_LINE_MAX 1024
#define CONTROL_REPLY_MAX 8192	/* "stats" answers every counter on one line */
#define CONTROL_TIMEOUT_SEC 10
/* A streamed answer's next slice is made when less than this is left
 * to send: the client is never waiting, and memory stays bounded. */
#define CONTROL_STREAM_LOW (64 * 1024)

struct control_req {
	struct bufferevent *bev;	/* NULL once the client is gone */
	control_stream_fn *stream;	/* a streamed answer, or NULL */
	void *stream_arg;
	void (*stream_free)(void *);
};

struct control {
	struct evconnlistener *listener;
	char *path;
	control_cmd_fn *fn;
	void *arg;
};

static void control_close_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

/* The client left while its answer was being prepared. */
static void control_req_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct control_req *req = arg;

	(void)what;
	bufferevent_free(bev);
	req->bev = NULL;
}

/* A streamed answer is over (written, or its client gone). */
static void control_stream_end(struct control_req *req)
{
	if (req->stream_free != NULL)
		req->stream_free(req->stream_arg);
	free(req);
}

static void control_stream_event_cb(struct bufferevent *bev, short what,
    void *arg)
{
	(void)what;
	bufferevent_free(bev);
	control_stream_end(arg);
}

/* Output drained below the low mark: the next slice. */
static void control_stream_write_cb_work(struct bufferevent *bev, void *arg)
{
	struct control_req *req = arg;

	if (req->stream(req->stream_arg, bufferevent_get_output(bev)))
		return;
	/* The last slice: close once it is written. */
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_setcb(bev, NULL, control_close_cb, control_event_cb, NULL);
	control_stream_end(req);
}

/* Watched: turnwatch.h. */
static void control_stream_write_cb(struct bufferevent *bev, void *arg)
{
	turnwatch_begin("control-stream");
	control_stream_write_cb_work(bev, arg);
	turnwatch_end();
}

void control_req_stream(struct control_req *req, control_stream_fn *fn,
    void *arg, void (*release)(void *))
{
	req->stream = fn;
	req->stream_arg = arg;
	req->stream_free = release;
	if (req->bev == NULL) {
		control_stream_end(req);
		return;
	}
	bufferevent_setwatermark(req->bev, EV_WRITE, CONTROL_STREAM_LOW, 0);
	bufferevent_setcb(req->bev, NULL, control_stream_write_cb,
	    control_stream_event_cb, req);
	/* The first slice now; the write callback asks for the others. */
	control_stream_write_cb(req->bev, req);
}

void control_req_reply(struct control_req *req, const char *fmt, ...)
{
	char reply[CONTROL_REPLY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reply, sizeof(reply), fmt, ap);
	va_end(ap);
	if (req->bev != NULL) {
		evbuffer_add_printf(bufferevent_get_output(req->bev), "%s\n", reply);
		bufferevent_setcb(req->bev, NULL, control_close_cb,
		    control_event_cb, NULL);
	}
	free(req);
}

/* The slow-turn log's name for a verb (turnwatch.h wants a string that
 * outlives the turn): the first verbs seen, "control" for the rest. */
static const char *control_label(const char *verb)
{
	static char label[16][32];
	static size_t n;
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(label[i] + 8, verb) == 0)
			return label[i];
	if (n == 16 || strlen(verb) + 9 > sizeof(label[0]))
		return "control";
	snprintf(label[n], sizeof(label[n]), "control %s", verb);
	return label[n++];
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
	struct control *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct control_req *req;
	struct lineio li = { 0 };
	char line[CONTROL_LINE_MAX + 3], *sp;
	size_t len;
	enum lineio_result lr;

	/* One request per connection: a line that has no end within the
	 * limit closes it (no state is kept across reads). */
	lr = lineio_peek(&li, in, CONTROL_LINE_MAX + 2, &len);
	if (lr == LINEIO_MORE) {
		if (li.discarding)
			bufferevent_free(bev);
		return;
	}
	bufferevent_disable(bev, EV_READ);
	req = xcalloc(1, sizeof(*req));
	req->bev = bev;
	bufferevent_setcb(bev, NULL, NULL, control_req_event_cb, req);
	if (lr == LINEIO_LONG)
		lineio_skip(&li, in, len);
	/* the limit is on the line without its end, which may be LF alone */
	if (lr == LINEIO_LONG ||
	    lineio_take(in, len, line, CONTROL_LINE_MAX + 2) > CONTROL_LINE_MAX) {
		control_req_reply(req, "500 line too long");
	} else {
		sp = strchr(line, ' ');
		if (sp != NULL)
			*sp++ = '\0';
		util_lowercase(line);
		if (strcmp(line, "ping") == 0) {
			control_req_reply(req, "250 pong");
		} else {
			turnwatch_begin(turnwatch_on ? control_label(line) :
			    NULL);
			c->fn(c->arg, line, sp ? sp : "", req);
			turnwatch_end();
		}
	}
}

static void control_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct control *c = arg;
	struct bufferevent *bev;
	struct timeval tv = { CONTROL_TIMEOUT_SEC, 0 };

	(void)sa;
	(void)salen;
	bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bufferevent_setwatermark(bev, EV_READ, 0, CONTROL_LINE_MAX * 2);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setcb(bev, control_read_cb, NULL, control_event_cb, c);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct control *control_new(struct event_base *base, const char *path,
    control_cmd_fn *fn, void *arg, char *err, size_t errlen)
{
	struct control *c;
	struct sockaddr_un sun;
	mode_t old;

	if (ctlclient_sockaddr(path, &sun) < 0) {
		snprintf(err, errlen, "%s: control socket path too long", path);
		return NULL;
	}
	/* A socket left by a crashed daemon would make bind fail. */
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->path = xstrdup(path);
	c->fn = fn;
	c->arg = arg;
	old = umask(0177);
	c->listener = evconnlistener_new_bind(base, control_accept_cb, c,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
	    (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (c->listener == NULL) {
		snprintf(err, errlen, "%s: cannot listen: %s", path, strerror(errno));
		free(c->path);
		free(c);
		return NULL;
	}
	return c;
}

void control_free(struct control **cp)
{
	struct control *c = *cp;

	if (c == NULL)
		return;
	evconnlistener_free(c->listener);
	unlink(c->path);
	free(c->path);
	free(c);
	*cp = NULL;
}
