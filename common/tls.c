/*
 * tls - OpenSSL contexts for our listeners and clients.
 *
 * Contexts are built at startup or reload (they read files, so never on a
 * session's path). TLS 1.2 is the floor on both sides; the cipher lists
 * are OpenSSL's defaults, which are sane for 1.1.1 and 3.x.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "tls.h"
#include "xmalloc.h"
#include "util.h"

/* "what: first OpenSSL error" into err; clears the error queue. */
static void tls_error(char *err, size_t errlen, const char *what)
{
	unsigned long e;
	char buf[256];

	e = ERR_peek_last_error();
	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err, errlen, "%s: %s", what, buf);
	} else
		snprintf(err, errlen, "%s", what);
	ERR_clear_error();
}

static SSL_CTX *tls_ctx_new(const SSL_METHOD *method, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(method)) == NULL) {
		tls_error(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		tls_error(err, errlen, "cannot set minimum TLS version");
		SSL_CTX_free(ctx);
		return NULL;
	}
	/*
	 * No compression (CRIME); no renegotiation by the peer (a cheap CPU
	 * DoS, and mail needs none). Partial writes are allowed because
	 * bufferevent_openssl retries with moving buffers.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION
#ifdef SSL_OP_NO_RENEGOTIATION
	    | SSL_OP_NO_RENEGOTIATION
#endif
	    );
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

static void tls_server_options(SSL_CTX *ctx)
{
	/* Our cipher order, not the client's. */
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Sessions are short and few; no resumption cache to manage. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	/* Idle sessions (XWAIT, idle SMTP) give their 34 kB of record
	 * buffers back between records. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char what[512];

	if (cert_file == NULL || key_file == NULL) {
		snprintf(err, errlen, "certificate and key files are required");
		return NULL;
	}
	if ((ctx = tls_ctx_new(TLS_server_method(), err, errlen)) == NULL)
		return NULL;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		snprintf(what, sizeof(what), "cannot load certificate %s",
		    cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL checks the pair here already: say so plainly. */
		if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    X509_R_KEY_VALUES_MISMATCH)
			snprintf(what, sizeof(what), "private key %s does not "
			    "match certificate %s", key_file, cert_file);
		else
			snprintf(what, sizeof(what), "cannot load private key "
			    "%s", key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof(what), "private key %s does not match "
		    "certificate %s", key_file, cert_file);
		goto fail;
	}
	tls_server_options(ctx);
	return ctx;
fail:
	tls_error(err, errlen, what);
	SSL_CTX_free(ctx);
	return NULL;
}

/* Read a whole small PEM file from fd into a memory BIO (NULL: error). */
static BIO *tls_read_fd(int fd)
{
	char buf[8192];
	BIO *bio = BIO_new(BIO_s_mem());
	size_t total = 0;
	ssize_t n;

	if (bio == NULL)
		return NULL;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		total += (size_t)n;
		if (total > TLS_PEM_MAX || BIO_write(bio, buf, (int)n) != n) {
			n = -1;
			break;
		}
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	if (n != 0) {
		BIO_free(bio);
		return NULL;
	}
	return bio;
}

SSL_CTX *tls_server_ctx_fd(int cert_fd, int key_fd, const char *cert_name,
    const char *key_name, char *err, size_t errlen)
{
	SSL_CTX *ctx = NULL;
	BIO *cb = NULL, *kb = NULL;
	X509 *x;
	EVP_PKEY *key = NULL;
	char what[512];

	if ((cb = tls_read_fd(cert_fd)) == NULL ||
	    (kb = tls_read_fd(key_fd)) == NULL) {
		snprintf(err, errlen, "cannot read %s or %s", cert_name, key_name);
		goto out;
	}
	if ((ctx = tls_ctx_new(TLS_server_method(), err, errlen)) == NULL)
		goto out;
	/* As SSL_CTX_use_certificate_chain_file: leaf, then the chain. */
	x = PEM_read_bio_X509_AUX(cb, NULL, NULL, NULL);
	if (x == NULL || SSL_CTX_use_certificate(ctx, x) != 1) {
		X509_free(x);
		snprintf(what, sizeof(what), "cannot load certificate %s",
		    cert_name);
		goto fail;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL)
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			snprintf(what, sizeof(what), "cannot load the chain "
			    "of %s", cert_name);
			goto fail;
		}
	ERR_clear_error();	/* the end of the chain reads as an error */
	key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
	if (key == NULL || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof(what), "cannot load private key %s (or it "
		    "does not match certificate %s)", key_name, cert_name);
		goto fail;
	}
	tls_server_options(ctx);
	goto out;
fail:
	tls_error(err, errlen, what);
	SSL_CTX_free(ctx);
	ctx = NULL;
out:
	EVP_PKEY_free(key);
	BIO_free(cb);
	BIO_free(kb);
	return ctx;
}

SSL_CTX *tls_client_ctx(const char *ca_file, int verify, char *err,
    size_t errlen)
{
	SSL_CTX *ctx;
	char what[512];

	if ((ctx = tls_ctx_new(TLS_client_method(), err, errlen)) == NULL)
		return NULL;
	if (!verify) {
		/*
		 * Opportunistic TLS (RFC 7435): encrypt against passive
		 * eavesdroppers; an unverifiable certificate is no reason
		 * to fall back to plaintext.
		 */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			snprintf(what, sizeof(what), "cannot load CA file %s",
			    ca_file);
			tls_error(err, errlen, what);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		tls_error(err, errlen, "cannot load the system CA store");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

int tls_client_set_host(SSL *ssl, const char *host, int verify)
{
	char buf[256];
	size_t len;

	if (host == NULL || *host == '\0')
		return verify ? -1 : 0;
	if (util_strlcpy(buf, host, sizeof(buf)) < 0)
		return -1;
	/* SNI carries a DNS name without the root dot, never an IP. */
	len = strlen(buf);
	if (len > 1 && buf[len - 1] == '.')
		buf[len - 1] = '\0';
	if (strchr(buf, ':') == NULL &&
	    strspn(buf, "0123456789.") != strlen(buf)) {
		if (SSL_set_tlsext_host_name(ssl, buf) != 1) {
			ERR_clear_error();
			return -1;
		}
	}
	if (verify) {
		/* Name checks: DNS names per RFC 6125, IP literals too. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, buf) != 1) {
			ERR_clear_error();
			return -1;
		}
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	}
	return 0;
}

/* ---- closing after the last byte is written ---- */

#define TLS_LINGER_POLL_MS	20
#define TLS_LINGER_MAX_MS	5000

struct tls_linger {
	struct bufferevent *bev;
	struct event *timer;
	unsigned waited_ms;
	struct tls_linger *prev, *next;
};

/* Loop thread only: closes still waiting, freed by tls_linger_flush_all. */
static struct tls_linger *tls_lingering;

static int tls_linger_pending(struct bufferevent *bev)
{
	struct bufferevent *under = bufferevent_get_underlying(bev);

	return evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
	    (under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0);
}

static void tls_linger_end(struct tls_linger *l)
{
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		tls_lingering = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	event_free(l->timer);
	bufferevent_free(l->bev);
	free(l);
}

static void tls_linger_tick(evutil_socket_t fd, short what, void *arg)
{
	struct tls_linger *l = arg;
	struct timeval tv = { 0, TLS_LINGER_POLL_MS * 1000 };

	(void)fd;
	(void)what;
	l->waited_ms += TLS_LINGER_POLL_MS;
	if (!tls_linger_pending(l->bev) || l->waited_ms >= TLS_LINGER_MAX_MS) {
		tls_linger_end(l);
		return;
	}
	evtimer_add(l->timer, &tv);
}

static void tls_linger_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	tls_linger_end(arg);
}

void tls_bev_close_flushed(struct bufferevent *bev)
{
	struct tls_linger *l;
	struct timeval tv = { 0, 0 };

	if (bev == NULL)
		return;
	bufferevent_disable(bev, EV_READ);
	{
		/* close_notify, so the peer sees a clean end (RFC 8446 6.1);
		 * it is queued like any other output. */
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		if (ssl != NULL && SSL_is_init_finished(ssl) &&
		    !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
			(void)SSL_shutdown(ssl);
	}
	if (!tls_linger_pending(bev)) {
		bufferevent_free(bev);
		return;
	}
	l = xcalloc(1, sizeof(*l));
	l->bev = bev;
	l->timer = evtimer_new(bufferevent_get_base(bev), tls_linger_tick, l);
	l->next = tls_lingering;
	if (tls_lingering != NULL)
		tls_lingering->prev = l;
	tls_lingering = l;
	bufferevent_setcb(bev, NULL, NULL, tls_linger_event, l);
	bufferevent_enable(bev, EV_WRITE);
	evtimer_add(l->timer, &tv);
}

void tls_linger_free_all(void)
{
	while (tls_lingering != NULL)
		tls_linger_end(tls_lingering);
}
