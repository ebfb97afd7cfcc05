/*
 * tls - OpenSSL contexts for our listeners and clients.
 */
#ifndef OD_TLS_H
#define OD_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* Server context from PEM cert (chain) and key; NULL + err on failure. */
SSL_CTX *tls_server_ctx(const char *cert_file, const char *key_file,
    char *err, size_t errlen);
/* The same from open descriptors (the privileged helper opens the files
 * on SIGHUP, since run_as_user may not read the key); names for messages.
 * Reads at most TLS_PEM_MAX bytes of each. */
#define TLS_PEM_MAX	(1 << 20)
SSL_CTX *tls_server_ctx_fd(int cert_fd, int key_fd, const char *cert_name,
    const char *key_name, char *err, size_t errlen);
/*
 * Client context. verify: 1 = verify the peer's chain against ca_file (or
 * the system store when ca_file is NULL); 0 = encrypt only (MX delivery:
 * opportunistic TLS, RFC 7435).
 */
SSL_CTX *tls_client_ctx(const char *ca_file, int verify, char *err, size_t errlen);
/* Set SNI and host name verification on a client SSL. 0 or -1. */
int tls_client_set_host(SSL *ssl, const char *host, int verify);

struct bufferevent;
/*
 * Close bev once what it still has to write is on the wire, then free it
 * (it must own its socket). With a TLS filter the last reply sits in the
 * underlying bufferevent after the filter's own buffer is empty, so
 * freeing at once would lose it (a 221 after QUIT). Gives up after a few
 * seconds or at the first error. Takes ownership; callbacks are replaced.
 */
void tls_bev_close_flushed(struct bufferevent *bev);
/* At exit, before the event base is freed: drop closes still waiting. */
void tls_linger_free_all(void);

#endif
