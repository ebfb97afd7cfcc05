/*
 * sasl_client - the client side of CRAM-MD5, SCRAM-SHA-256, PLAIN and
 * LOGIN (odpull's AUTH). Interface notes in sasl.h.
 *
 * The server's challenges are untrusted: parsed strictly into bounded
 * buffers; the SCRAM server signature is checked in constant time.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "passwd.h"
#include "sasl.h"
#include "util.h"
#include "xmalloc.h"
#include "sasl_private.h"

/* ---- client ---- */

struct sasl_client {
	enum sasl_mech mech;
	int state;
	int done;
	char *user;
	char *pass;
	char *client_first_bare;
	unsigned char server_sig[32];
};

struct sasl_client *sasl_client_new(const char *mech, const char *user,
    const char *password)
{
	struct sasl_client *c;
	enum sasl_mech m = sasl_mech_lookup(mech);

	if (m == MECH_NONE || user == NULL || password == NULL ||
	    strlen(user) > PASSWD_NAME_MAX ||
	    strlen(password) > PASSWD_PASSWORD_MAX)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->mech = m;
	c->user = xstrdup(user);
	c->pass = xstrdup(password);
	return c;
}

void sasl_client_free(struct sasl_client **cp)
{
	struct sasl_client *c = *cp;

	if (c == NULL)
		return;
	OPENSSL_cleanse(c->pass, strlen(c->pass));
	free(c->pass);
	free(c->user);
	free(c->client_first_bare);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
	*cp = NULL;
}

int sasl_client_done(const struct sasl_client *c)
{
	return c != NULL && c->done;
}

static int sasl_client_plain(struct sasl_client *c, unsigned char *out,
    size_t outsize, size_t *outlen_r)
{
	size_t ul = strlen(c->user), pl = strlen(c->pass);

	if (2 + ul + pl > outsize)
		return -1;
	out[0] = '\0';
	memcpy(out + 1, c->user, ul);
	out[1 + ul] = '\0';
	memcpy(out + 2 + ul, c->pass, pl);
	*outlen_r = 2 + ul + pl;
	c->done = 1;
	return 0;
}

int sasl_client_start(struct sasl_client *c, unsigned char *out,
    size_t outsize, size_t *outlen_r)
{
	char name[PASSWD_NAME_MAX * 3 + 1], cnonce[64], *msg;
	int rc;

	*outlen_r = 0;
	switch (c->mech) {
	case MECH_PLAIN:
		c->state = 1;
		return sasl_client_plain(c, out, outsize, outlen_r) < 0 ? -1 : 1;
	case MECH_SCRAM:
		if (sasl_name_encode(c->user, name, sizeof(name)) < 0)
			return -1;
		if (sasl_test_cnonce != NULL)
			util_strlcpy(cnonce, sasl_test_cnonce, sizeof(cnonce));
		else if (sasl_nonce(cnonce, sizeof(cnonce)) < 0)
			return -1;
		free(c->client_first_bare);
		c->client_first_bare = xasprintf("n=%s,r=%s", name, cnonce);
		msg = xasprintf("n,,%s", c->client_first_bare);
		rc = sasl_put(out, outsize, outlen_r, msg, strlen(msg));
		free(msg);
		c->state = 1;
		return rc == SASL_CONTINUE ? 1 : -1;
	default:
		return 0;
	}
}

static int sasl_client_cram(struct sasl_client *c, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t outsize, size_t *outlen_r)
{
	unsigned char mac[16];
	unsigned int maclen = sizeof(mac);
	char *msg;
	int i, rc;

	if (inlen == 0 || HMAC(EVP_md5(), c->pass, (int)strlen(c->pass), in,
	    inlen, mac, &maclen) == NULL)
		return SASL_FAIL;
	msg = xmalloc(strlen(c->user) + 34);
	i = sprintf(msg, "%s ", c->user);
	for (size_t k = 0; k < 16; k++)
		i += sprintf(msg + i, "%02x", mac[k]);
	rc = sasl_put(out, outsize, outlen_r, msg, (size_t)i);
	free(msg);
	return rc;
}

/* Value of attribute "X=" at the start of s, up to ',' or end. */
static const char *sasl_attr(const char *s, char name, size_t *len_r)
{
	const char *e;

	if (s[0] != name || s[1] != '=')
		return NULL;
	e = strchr(s + 2, ',');
	*len_r = e ? (size_t)(e - s - 2) : strlen(s + 2);
	return s + 2;
}

static int sasl_client_scram_first(struct sasl_client *c,
    const unsigned char *in, size_t inlen, unsigned char *out, size_t outsize,
    size_t *outlen_r)
{
	char *msg, *p, *am = NULL, *final = NULL, proof64[64];
	const char *nonce, *salt64, *iter_s, *cnonce;
	size_t nlen, slen, ilen, cnlen;
	unsigned char salt[128], ckey[32], stored[32], skey[32], csig[32];
	unsigned long iter = 0;
	int n, i, rc = SASL_FAIL;

	if ((msg = sasl_cstr(in, inlen)) == NULL)
		return SASL_FAIL;
	/* r=nonce,s=salt,i=iter */
	p = msg;
	if ((nonce = sasl_attr(p, 'r', &nlen)) == NULL)
		goto out;
	p = (char *)nonce + nlen;
	if (*p++ != ',' || (salt64 = sasl_attr(p, 's', &slen)) == NULL)
		goto out;
	p = (char *)salt64 + slen;
	if (*p++ != ',' || (iter_s = sasl_attr(p, 'i', &ilen)) == NULL)
		goto out;
	cnonce = strstr(c->client_first_bare, ",r=") + 3;
	cnlen = strlen(cnonce);
	/* The server must extend our nonce, not replace it. */
	if (nlen <= cnlen || nlen > 2 * SASL_NONCE_MAX ||
	    strncmp(nonce, cnonce, cnlen) != 0)
		goto out;
	for (i = 0; i < (int)nlen; i++)
		if (nonce[i] < 0x21 || nonce[i] > 0x7e)
			goto out;
	if (ilen == 0 || ilen > 7)
		goto out;
	for (i = 0; i < (int)ilen; i++) {
		if (!isdigit((unsigned char)iter_s[i]))
			goto out;
		iter = iter * 10 + (unsigned long)(iter_s[i] - '0');
	}
	/* A low count would make our proof cheap to crack offline. */
	if (iter < PASSWD_SCRAM_ITER_MIN || iter > PASSWD_SCRAM_ITER_MAX)
		goto out;
	n = util_base64_decode(salt64, slen, salt, sizeof(salt));
	if (n <= 0)
		goto out;
	if (passwd_scram_keys(c->pass, strlen(c->pass), salt, (size_t)n,
	    (unsigned)iter, ckey, stored, skey) < 0)
		goto out;
	final = xasprintf("c=biws,r=%.*s", (int)nlen, nonce);
	am = xasprintf("%s,%s,%s", c->client_first_bare, msg, final);
	if (sasl_hmac256(stored, 32, am, strlen(am), csig) < 0 ||
	    sasl_hmac256(skey, 32, am, strlen(am), c->server_sig) < 0)
		goto out;
	for (i = 0; i < 32; i++)
		ckey[i] ^= csig[i];
	if (util_base64_encode(ckey, 32, proof64, sizeof(proof64)) < 0)
		goto out;
	free(msg);
	msg = xasprintf("%s,p=%s", final, proof64);
	rc = sasl_put(out, outsize, outlen_r, msg, strlen(msg));
	c->state = 2;
out:
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(skey, sizeof(skey));
	OPENSSL_cleanse(stored, sizeof(stored));
	free(final);
	free(am);
	free(msg);
	return rc;
}

static int sasl_client_scram_final(struct sasl_client *c,
    const unsigned char *in, size_t inlen, size_t *outlen_r)
{
	unsigned char sig[32];
	char *msg;
	const char *v;
	size_t vlen;
	int ok;

	if ((msg = sasl_cstr(in, inlen)) == NULL)
		return SASL_FAIL;
	v = sasl_attr(msg, 'v', &vlen);
	ok = v != NULL && util_base64_decode(v, vlen, sig, sizeof(sig)) == 32 &&
	    CRYPTO_memcmp(sig, c->server_sig, 32) == 0;
	free(msg);
	if (!ok)
		return SASL_FAIL;
	c->done = 1;
	c->state = 3;
	*outlen_r = 0;
	return SASL_CONTINUE;
}

int sasl_client_step(struct sasl_client *c, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t outsize, size_t *outlen_r)
{
	int rc = SASL_FAIL;

	*outlen_r = 0;
	if (c == NULL)
		return SASL_BAD_MECH;
	if (in == NULL)
		inlen = 0;
	switch (c->mech) {
	case MECH_PLAIN:
		/* Only an empty 334 (no initial response was sent) makes
		 * sense here. */
		if (c->state == 0 && inlen == 0) {
			c->state = 2;
			rc = sasl_client_plain(c, out, outsize, outlen_r) < 0 ?
			    SASL_FAIL : SASL_CONTINUE;
		}
		break;
	case MECH_LOGIN:
		/* Servers word their prompts freely; go by order. */
		if (c->state == 0)
			rc = sasl_put(out, outsize, outlen_r, c->user,
			    strlen(c->user));
		else if (c->state == 1) {
			rc = sasl_put(out, outsize, outlen_r, c->pass,
			    strlen(c->pass));
			c->done = rc == SASL_CONTINUE;
		}
		c->state++;
		break;
	case MECH_CRAM:
		if (c->state == 0) {
			rc = sasl_client_cram(c, in, inlen, out, outsize,
			    outlen_r);
			c->done = rc == SASL_CONTINUE;
		}
		c->state++;
		break;
	case MECH_SCRAM:
		if (c->state == 1)
			rc = sasl_client_scram_first(c, in, inlen, out,
			    outsize, outlen_r);
		else if (c->state == 2)
			rc = sasl_client_scram_final(c, in, inlen, outlen_r);
		break;
	default:
		break;
	}
	if (rc != SASL_CONTINUE) {
		*outlen_r = 0;
		c->done = 0;
		rc = SASL_FAIL;
	}
	return rc;
}

const char *sasl_client_choose(const char *offered, int tls_active)
{
	static const enum sasl_mech pref[] = {
		MECH_SCRAM, MECH_CRAM, MECH_PLAIN, MECH_LOGIN
	};
	const char *p, *e;
	size_t i, len;

	if (offered == NULL)
		return NULL;
	for (i = 0; i < sizeof(pref) / sizeof(pref[0]); i++) {
		const char *name = sasl_mech_names[pref[i]];

		if ((pref[i] == MECH_PLAIN || pref[i] == MECH_LOGIN) &&
		    !tls_active)
			continue;
		len = strlen(name);
		for (p = offered; *p != '\0'; p = e) {
			while (*p == ' ')
				p++;
			e = p;
			while (*e != '\0' && *e != ' ')
				e++;
			if ((size_t)(e - p) == len &&
			    strncasecmp(p, name, len) == 0)
				return name;
		}
	}
	return NULL;
}
