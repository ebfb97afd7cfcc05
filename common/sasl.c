/*
 * sasl - the server side of CRAM-MD5, SCRAM-SHA-256, PLAIN and LOGIN, the
 * AUTH command's exchange, and the helpers the client side shares
 * (sasl_client.c); failure throttling is in sasl_throttle.c. Interface
 * notes in sasl.h.
 *
 * Everything here handles untrusted input: messages are copied into
 * bounded buffers, parsed strictly, and secrets compared in constant time.
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

const char *const sasl_mech_names[] = {
	"SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"
};

static char *sasl_test_snonce, *sasl_test_cram;
char *sasl_test_cnonce;
double sasl_test_now = -1;

void sasl_test_set_nonces(const char *server_nonce, const char *client_nonce,
    const char *cram_challenge)
{
	free(sasl_test_snonce);
	free(sasl_test_cnonce);
	free(sasl_test_cram);
	sasl_test_snonce = server_nonce ? xstrdup(server_nonce) : NULL;
	sasl_test_cnonce = client_nonce ? xstrdup(client_nonce) : NULL;
	sasl_test_cram = cram_challenge ? xstrdup(cram_challenge) : NULL;
}

void sasl_test_set_time(double now)
{
	sasl_test_now = now;
}

enum sasl_mech sasl_mech_lookup(const char *mech)
{
	int i;

	if (mech == NULL)
		return MECH_NONE;
	for (i = 0; i < MECH_NONE; i++)
		if (strcasecmp(mech, sasl_mech_names[i]) == 0)
			return (enum sasl_mech)i;
	return MECH_NONE;
}

const char *sasl_mechs_offered(int tls_active, int requires_tls)
{
	if (requires_tls && !tls_active)
		return "SCRAM-SHA-256 CRAM-MD5";
	return "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN";
}

int sasl_mech_known(const char *mech)
{
	return sasl_mech_lookup(mech) != MECH_NONE;
}

int sasl_mech_plaintext(const char *mech)
{
	enum sasl_mech m = sasl_mech_lookup(mech);

	return m == MECH_PLAIN || m == MECH_LOGIN;
}

/* ---- shared helpers ---- */

/* Copy out data if it fits. */
int sasl_put(unsigned char *out, size_t outsize, size_t *outlen_r,
    const void *data, size_t len)
{
	if (len > outsize)
		return SASL_FAIL;
	if (len > 0)
		memcpy(out, data, len);
	*outlen_r = len;
	return SASL_CONTINUE;
}

/* Random nonce of printable characters without ',' (base64 of 18 bytes). */
int sasl_nonce(char *buf, size_t size)
{
	unsigned char raw[18];

	if (util_random(raw, sizeof(raw)) < 0)
		return -1;
	return util_base64_encode(raw, sizeof(raw), buf, size) < 0 ? -1 : 0;
}

static int sasl_nonce_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > SASL_NONCE_MAX)
		return 0;
	for (; *s != '\0'; s++)
		if (*s < 0x21 || *s > 0x7e || *s == ',')
			return 0;
	return 1;
}

/* RFC 5802 saslname: "=2C" is ',', "=3D" is '='. Returns 0 or -1. */
static int sasl_name_decode(const char *s, size_t len, char *dst, size_t size)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		char c = s[i];

		if (c == ',' || c == '\0')
			return -1;
		if (c == '=') {
			if (len - i < 3)
				return -1;
			if (s[i + 1] == '2' && s[i + 2] == 'C')
				c = ',';
			else if (s[i + 1] == '3' && s[i + 2] == 'D')
				c = '=';
			else
				return -1;
			i += 2;
		}
		if (o + 1 >= size)
			return -1;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return 0;
}

int sasl_name_encode(const char *s, char *dst, size_t size)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		const char *rep = *s == ',' ? "=2C" : *s == '=' ? "=3D" : NULL;
		size_t n = rep ? 3 : 1;

		if (o + n >= size)
			return -1;
		if (rep)
			memcpy(dst + o, rep, 3);
		else
			dst[o] = *s;
		o += n;
	}
	dst[o] = '\0';
	return 0;
}

int sasl_hmac256(const unsigned char *key, size_t keylen,
    const char *msg, size_t len, unsigned char out[32])
{
	unsigned int mdlen = 32;

	return HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg,
	    len, out, &mdlen) == NULL ? -1 : 0;
}

/* Message bytes as a C string: no NUL inside, bounded. */
char *sasl_cstr(const unsigned char *in, size_t len)
{
	if (len > SASL_IN_MAX || memchr(in, '\0', len) != NULL)
		return NULL;
	return xstrndup((const char *)in, len);
}

/* ---- server ---- */

enum sasl_sstate {
	SS_START,	/* nothing received yet */
	SS_WAIT_FIRST,	/* sent an empty challenge, want the client's first */
	SS_WAIT_USER,	/* LOGIN */
	SS_WAIT_PASS,	/* LOGIN */
	SS_WAIT_RESPONSE, /* CRAM-MD5 */
	SS_WAIT_FINAL,	/* SCRAM client-final */
	SS_WAIT_ACK,	/* SCRAM: server-final sent, want the empty answer */
	SS_DONE_OK,
	SS_DONE_FAIL
};

struct sasl_server {
	enum sasl_mech mech;
	enum sasl_sstate state;
	struct passwd_db *pw;		/* referenced */
	const char *hostname;
	char user[PASSWD_NAME_MAX + 1];
	char pending_user[PASSWD_NAME_MAX + 1];	/* until proven */
	char challenge[512];			/* CRAM-MD5 */
	/* SCRAM */
	char *client_first_bare;
	char *server_first;
	char *gs2_header;
	char *nonce;
	const struct passwd_user *u;
	unsigned char fake_key[32];
	unsigned char server_sig[32];
	sasl_gate_fn *gate;
	void *gatearg;
};

void sasl_server_set_gate(struct sasl_server *s, sasl_gate_fn *gate,
    void *arg)
{
	s->gate = gate;
	s->gatearg = arg;
}

/* 1 if a password for user may be checked now. */
static int sasl_server_gate(struct sasl_server *s, const char *user)
{
	return s->gate == NULL || s->gate(s->gatearg, user);
}

struct sasl_server *sasl_server_new(const char *mech,
    struct passwd_db *pw, const char *hostname, int tls_active,
    int requires_tls)
{
	struct sasl_server *s;
	enum sasl_mech m = sasl_mech_lookup(mech);

	if (m == MECH_NONE)
		return NULL;
	if ((m == MECH_PLAIN || m == MECH_LOGIN) && requires_tls && !tls_active)
		return NULL;
	s = xcalloc(1, sizeof(*s));
	s->mech = m;
	s->pw = passwd_ref(pw);
	s->hostname = hostname != NULL ? hostname : "localhost";
	s->state = SS_START;
	return s;
}

int sasl_server_set_passwd(struct sasl_server *s, struct passwd_db *pw)
{
	switch (s->state) {
	case SS_START:
	case SS_WAIT_FIRST:
	case SS_WAIT_USER:
	case SS_WAIT_PASS:
	case SS_WAIT_RESPONSE:
		/* Nothing looked up yet: nothing points into the old db. */
		passwd_free(&s->pw);
		s->pw = passwd_ref(pw);
		return 0;
	default:
		return -1;
	}
}

void sasl_server_free(struct sasl_server **sp)
{
	struct sasl_server *s = *sp;

	if (s == NULL)
		return;
	free(s->client_first_bare);
	free(s->server_first);
	free(s->gs2_header);
	free(s->nonce);
	passwd_free(&s->pw);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
	*sp = NULL;
}

const char *sasl_server_user(const struct sasl_server *s)
{
	return s != NULL && s->state == SS_DONE_OK ? s->user : NULL;
}

const char *sasl_server_mech(const struct sasl_server *s)
{
	return sasl_mech_names[s->mech];
}

static int sasl_server_verify(struct sasl_server *s, const char *user,
    const char *pass, size_t passlen)
{
	const struct passwd_user *u;

	if (strlen(user) == 0 || strlen(user) > PASSWD_NAME_MAX ||
	    passlen > PASSWD_PASSWORD_MAX)
		return SASL_FAIL;
	if (!sasl_server_gate(s, user))
		return SASL_FAIL;
	u = passwd_find(s->pw, user);
	if (!passwd_user_check_password(u, pass, passlen))
		return SASL_FAIL;
	util_strlcpy(s->user, user, sizeof(s->user));
	return SASL_OK;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd */
static int sasl_server_plain(struct sasl_server *s, const unsigned char *in,
    size_t len)
{
	const unsigned char *n1, *n2;
	char authzid[PASSWD_NAME_MAX + 1], authcid[PASSWD_NAME_MAX + 1];
	size_t zlen, clen, plen;
	int rc;

	if (len > SASL_IN_MAX || (n1 = memchr(in, '\0', len)) == NULL)
		return SASL_FAIL;
	n2 = memchr(n1 + 1, '\0', len - (size_t)(n1 + 1 - in));
	if (n2 == NULL)
		return SASL_FAIL;
	zlen = (size_t)(n1 - in);
	clen = (size_t)(n2 - n1 - 1);
	plen = len - (size_t)(n2 + 1 - in);
	if (zlen > PASSWD_NAME_MAX || clen == 0 || clen > PASSWD_NAME_MAX ||
	    plen == 0 || memchr(n2 + 1, '\0', plen) != NULL)
		return SASL_FAIL;
	memcpy(authzid, in, zlen);
	authzid[zlen] = '\0';
	memcpy(authcid, n1 + 1, clen);
	authcid[clen] = '\0';
	/* Acting as someone else is not offered. */
	if (zlen > 0 && strcmp(authzid, authcid) != 0)
		return SASL_FAIL;
	rc = sasl_server_verify(s, authcid, (const char *)n2 + 1, plen);
	return rc;
}

static int sasl_server_cram_response(struct sasl_server *s,
    const unsigned char *in, size_t len)
{
	const unsigned char *sp;
	unsigned char want[16], got[16];
	char user[PASSWD_NAME_MAX + 1];
	const struct passwd_user *u;
	size_t ulen, i;
	int ok = 1, hi, lo;

	/* "user SP 32 hex digits"; the name ends at the last space. */
	if (len < 34 || len > SASL_IN_MAX || memchr(in, '\0', len) != NULL)
		return SASL_FAIL;
	sp = in + len - 33;
	if (*sp != ' ')
		return SASL_FAIL;
	ulen = (size_t)(sp - in);
	if (ulen == 0 || ulen > PASSWD_NAME_MAX)
		return SASL_FAIL;
	memcpy(user, in, ulen);
	user[ulen] = '\0';
	for (i = 0; i < 16; i++) {
		hi = isxdigit(sp[1 + 2 * i]) ? sp[1 + 2 * i] : -1;
		lo = isxdigit(sp[2 + 2 * i]) ? sp[2 + 2 * i] : -1;
		if (hi < 0 || lo < 0)
			return SASL_FAIL;
		hi = isdigit(hi) ? hi - '0' : tolower(hi) - 'a' + 10;
		lo = isdigit(lo) ? lo - '0' : tolower(lo) - 'a' + 10;
		got[i] = (unsigned char)(hi << 4 | lo);
	}
	if (!sasl_server_gate(s, user))
		return SASL_FAIL;
	u = passwd_find(s->pw, user);
	if (passwd_user_cram_md5(u, (const unsigned char *)s->challenge,
	    strlen(s->challenge), want) < 0)
		ok = 0;
	ok &= CRYPTO_memcmp(want, got, 16) == 0;
	if (!ok)
		return SASL_FAIL;
	util_strlcpy(s->user, user, sizeof(s->user));
	return SASL_OK;
}

static int sasl_server_cram_start(struct sasl_server *s, unsigned char *out,
    size_t outsize, size_t *outlen_r)
{
	unsigned long long r;

	if (sasl_test_cram != NULL)
		util_strlcpy(s->challenge, sasl_test_cram, sizeof(s->challenge));
	else {
		/* RFC 2195: a unique msg-id form; random plus time never
		 * repeats in practice. */
		if (util_random(&r, sizeof(r)) < 0)
			return SASL_FAIL;
		snprintf(s->challenge, sizeof(s->challenge), "<%llu.%lld@%.255s>",
		    r, (long long)time(NULL), s->hostname);
	}
	s->state = SS_WAIT_RESPONSE;
	return sasl_put(out, outsize, outlen_r, s->challenge,
	    strlen(s->challenge));
}

/* Unknown users get a stable fake salt so SCRAM does not reveal them. */
static void sasl_scram_fake(const char *user, unsigned char salt_r[16])
{
	static unsigned char key[32];
	static int have_key;
	unsigned char mac[32];

	if (!have_key) {
		if (util_random(key, sizeof(key)) < 0)
			memset(key, 0x5a, sizeof(key));
		have_key = 1;
	}
	sasl_hmac256(key, sizeof(key), user, strlen(user), mac);
	memcpy(salt_r, mac, 16);
}

static int sasl_server_scram_first(struct sasl_server *s, const unsigned char *in,
    size_t len, unsigned char *out, size_t outsize, size_t *outlen_r)
{
	char *msg, *p, *bare, *comma, *cnonce;
	char user[PASSWD_NAME_MAX + 1], authzid[PASSWD_NAME_MAX + 1];
	char snonce[64], salt64[PASSWD_SCRAM_SALT_MAX * 2];
	struct passwd_scram sc;
	unsigned char fsalt[16];
	const unsigned char *salt;
	size_t saltlen;
	unsigned iter;
	int rc = SASL_FAIL;

	if ((msg = sasl_cstr(in, len)) == NULL)
		return SASL_FAIL;
	p = msg;
	/* gs2-header: cbind flag, authzid. "p=" asks for channel binding,
	 * which we neither offer nor do. "y" means the client could, but
	 * thinks we cannot: true. */
	if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',')
		goto out;
	p += 2;
	authzid[0] = '\0';
	if (strncmp(p, "a=", 2) == 0) {
		comma = strchr(p, ',');
		if (comma == NULL || sasl_name_decode(p + 2,
		    (size_t)(comma - p - 2), authzid, sizeof(authzid)) < 0)
			goto out;
		p = comma;
	}
	if (*p != ',')
		goto out;
	bare = p + 1;
	s->gs2_header = xstrndup(msg, (size_t)(bare - msg));
	/* client-first-message-bare: n=user,r=nonce[,ext]; "m=" is a
	 * mandatory extension we do not know. */
	if (strncmp(bare, "n=", 2) != 0)
		goto out;
	comma = strchr(bare + 2, ',');
	if (comma == NULL || sasl_name_decode(bare + 2,
	    (size_t)(comma - bare - 2), user, sizeof(user)) < 0 ||
	    user[0] == '\0')
		goto out;
	if (authzid[0] != '\0' && strcmp(authzid, user) != 0)
		goto out;
	if (strncmp(comma + 1, "r=", 2) != 0)
		goto out;
	cnonce = comma + 3;
	if ((p = strchr(cnonce, ',')) != NULL)
		*p = '\0';
	if (!sasl_nonce_valid(cnonce))
		goto out;
	if (sasl_test_snonce != NULL)
		util_strlcpy(snonce, sasl_test_snonce, sizeof(snonce));
	else if (sasl_nonce(snonce, sizeof(snonce)) < 0)
		goto out;
	s->nonce = xasprintf("%s%s", cnonce, snonce);
	if (p != NULL)
		*p = ',';
	s->client_first_bare = xstrdup(bare);
	util_strlcpy(s->pending_user, user, sizeof(s->pending_user));

	s->u = passwd_find(s->pw, user);
	if (passwd_user_scram(s->u, &sc) == 0) {
		salt = sc.salt;
		saltlen = sc.saltlen;
		iter = sc.iter;
	} else {
		s->u = NULL;
		sasl_scram_fake(user, fsalt);
		salt = fsalt;
		saltlen = sizeof(fsalt);
		iter = PASSWD_SCRAM_ITER;
	}
	if (util_base64_encode(salt, saltlen, salt64, sizeof(salt64)) < 0)
		goto out;
	s->server_first = xasprintf("r=%s,s=%s,i=%u", s->nonce, salt64, iter);
	s->state = SS_WAIT_FINAL;
	rc = sasl_put(out, outsize, outlen_r, s->server_first,
	    strlen(s->server_first));
out:
	free(msg);
	return rc;
}

static int sasl_server_scram_final(struct sasl_server *s, const unsigned char *in,
    size_t len, unsigned char *out, size_t outsize, size_t *outlen_r)
{
	char *msg, *proof64, *am = NULL, *p;
	char cb64[PASSWD_NAME_MAX * 4 + 32], sig64[64];
	unsigned char proof[32], csig[32], ckey[32], stored[32];
	struct passwd_scram sc;
	size_t cblen, nlen;
	int ok, rc = SASL_FAIL;

	if (!sasl_server_gate(s, s->pending_user))
		return SASL_FAIL;
	if ((msg = sasl_cstr(in, len)) == NULL)
		return SASL_FAIL;
	/* c=base64(gs2-header),r=nonce[,ext],p=proof -- p is last. */
	if ((proof64 = strstr(msg, ",p=")) == NULL)
		goto out;
	*proof64 = '\0';
	proof64 += 3;
	if (util_base64_decode(proof64, strlen(proof64), proof,
	    sizeof(proof)) != 32)
		goto out;
	if (util_base64_encode((const unsigned char *)s->gs2_header,
	    strlen(s->gs2_header), cb64, sizeof(cb64)) < 0)
		goto out;
	cblen = strlen(cb64);
	if (strncmp(msg, "c=", 2) != 0 || strncmp(msg + 2, cb64, cblen) != 0 ||
	    msg[2 + cblen] != ',')
		goto out;
	p = msg + 2 + cblen + 1;
	nlen = strlen(s->nonce);
	if (strncmp(p, "r=", 2) != 0 || strncmp(p + 2, s->nonce, nlen) != 0 ||
	    (p[2 + nlen] != '\0' && p[2 + nlen] != ','))
		goto out;
	am = xasprintf("%s,%s,%s", s->client_first_bare, s->server_first, msg);
	ok = passwd_user_scram(s->u, &sc) == 0;
	if (!ok) {
		/* Same work as a real user. */
		memset(&sc, 0, sizeof(sc));
		sc.stored_key = sc.server_key = s->fake_key;
	}
	if (sasl_hmac256(sc.stored_key, 32, am, strlen(am), csig) < 0)
		goto out;
	for (nlen = 0; nlen < 32; nlen++)
		ckey[nlen] = proof[nlen] ^ csig[nlen];
	SHA256(ckey, sizeof(ckey), stored);
	ok &= CRYPTO_memcmp(stored, sc.stored_key, 32) == 0;
	if (!ok)
		goto out;
	if (sasl_hmac256(sc.server_key, 32, am, strlen(am), s->server_sig) < 0)
		goto out;
	util_strlcpy(s->user, s->pending_user, sizeof(s->user));
	if (util_base64_encode(s->server_sig, 32, sig64, sizeof(sig64)) < 0)
		goto out;
	free(msg);
	msg = xasprintf("v=%s", sig64);
	s->state = SS_WAIT_ACK;
	rc = sasl_put(out, outsize, outlen_r, msg, strlen(msg));
out:
	OPENSSL_cleanse(ckey, sizeof(ckey));
	free(am);
	free(msg);
	return rc;
}

int sasl_server_step(struct sasl_server *s, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t outsize, size_t *outlen_r)
{
	int rc = SASL_FAIL;

	*outlen_r = 0;
	if (s == NULL)
		return SASL_BAD_MECH;
	if (in == NULL)
		inlen = 0;
	switch (s->state) {
	case SS_START:
		switch (s->mech) {
		case MECH_CRAM:
			/* No initial response in CRAM-MD5. */
			rc = inlen == 0 ? sasl_server_cram_start(s, out,
			    outsize, outlen_r) : SASL_FAIL;
			break;
		case MECH_LOGIN:
			if (inlen == 0) {
				s->state = SS_WAIT_USER;
				rc = sasl_put(out, outsize, outlen_r,
				    "Username:", 9);
				break;
			}
			goto login_user;
		case MECH_PLAIN:
		case MECH_SCRAM:
			if (inlen == 0) {
				s->state = SS_WAIT_FIRST;
				rc = SASL_CONTINUE;
				break;
			}
			goto first;
		default:
			break;
		}
		break;
	case SS_WAIT_FIRST:
	first:
		if (s->mech == MECH_PLAIN)
			rc = sasl_server_plain(s, in, inlen);
		else
			rc = sasl_server_scram_first(s, in, inlen, out,
			    outsize, outlen_r);
		break;
	case SS_WAIT_USER:
	login_user:
		if (inlen == 0 || inlen > PASSWD_NAME_MAX ||
		    memchr(in, '\0', inlen) != NULL)
			break;
		memcpy(s->pending_user, in, inlen);
		s->pending_user[inlen] = '\0';
		s->state = SS_WAIT_PASS;
		rc = sasl_put(out, outsize, outlen_r, "Password:", 9);
		break;
	case SS_WAIT_PASS:
		if (inlen == 0 || memchr(in, '\0', inlen) != NULL)
			break;
		rc = sasl_server_verify(s, s->pending_user, (const char *)in,
		    inlen);
		break;
	case SS_WAIT_RESPONSE:
		rc = sasl_server_cram_response(s, in, inlen);
		break;
	case SS_WAIT_FINAL:
		rc = sasl_server_scram_final(s, in, inlen, out, outsize,
		    outlen_r);
		break;
	case SS_WAIT_ACK:
		rc = inlen == 0 ? SASL_OK : SASL_FAIL;
		break;
	case SS_DONE_OK:
	case SS_DONE_FAIL:
		break;
	}
	if (rc == SASL_OK)
		s->state = SS_DONE_OK;
	else if (rc != SASL_CONTINUE) {
		s->state = SS_DONE_FAIL;
		s->user[0] = '\0';
		*outlen_r = 0;
		rc = SASL_FAIL;
	}
	return rc;
}

/* ---- the AUTH command ---- */

#define SASL_AUTH_DATA_MAX	12288	/* RFC 4954 4: AUTH lines */

/* One step with decoded input; writes the reply. */
static int sasl_auth_step(struct sasl_server **s, const unsigned char *in,
    size_t inlen, char *reply, size_t replylen)
{
	unsigned char out[SASL_OUT_MAX];
	char b64[SASL_OUT_MAX * 4 / 3 + 8];
	size_t outlen = 0;
	int rc;

	rc = sasl_server_step(*s, in, inlen, out, sizeof(out), &outlen);
	if (rc == SASL_CONTINUE) {
		if (util_base64_encode(out, outlen, b64, sizeof(b64)) < 0) {
			rc = SASL_FAIL;
		} else {
			snprintf(reply, replylen, "334 %s", b64);
			return SASL_CONTINUE;
		}
	}
	if (rc == SASL_OK) {
		snprintf(reply, replylen, "235 2.7.0 Authentication successful");
		return SASL_OK;
	}
	sasl_server_free(s);
	snprintf(reply, replylen, "535 5.7.8 Authentication credentials invalid");
	return SASL_FAIL;
}

/* The client gave an initial response: the next step is its first
 * message. -1 for a mechanism in which the server speaks first. */
static int sasl_server_initial(struct sasl_server *s)
{
	switch (s->mech) {
	case MECH_PLAIN:
	case MECH_SCRAM:
		s->state = SS_WAIT_FIRST;
		return 0;
	case MECH_LOGIN:
		s->state = SS_WAIT_USER;
		return 0;
	default:
		return -1;
	}
}

/* Decode a client line; "=" is the empty response (RFC 4954 4). */
static int sasl_auth_decode(const char *text, unsigned char *buf, size_t size)
{
	if (strcmp(text, "=") == 0)
		return 0;
	return util_base64_decode(text, strlen(text), buf, size);
}

int sasl_auth_begin(const char *arg, struct passwd_db *pw,
    const char *hostname, int tls_active, int requires_tls,
    struct sasl_server **s, char *reply, size_t replylen)
{
	return sasl_auth_begin_gated(arg, pw, hostname, tls_active,
	    requires_tls, NULL, NULL, s, reply, replylen);
}

int sasl_auth_begin_gated(const char *arg, struct passwd_db *pw,
    const char *hostname, int tls_active, int requires_tls,
    sasl_gate_fn *gate, void *gatearg, struct sasl_server **s, char *reply,
    size_t replylen)
{
	char mech[32];
	const char *initial;
	unsigned char dec[SASL_AUTH_DATA_MAX];
	size_t mlen;
	int n;

	*s = NULL;
	while (*arg == ' ')
		arg++;
	mlen = strcspn(arg, " ");
	initial = arg[mlen] == ' ' ? arg + mlen + 1 : NULL;
	if (mlen == 0 || mlen >= sizeof(mech)) {
		snprintf(reply, replylen, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return SASL_BAD_MECH;
	}
	memcpy(mech, arg, mlen);
	mech[mlen] = '\0';
	*s = sasl_server_new(mech, pw, hostname, tls_active, requires_tls);
	if (*s == NULL) {
		if (sasl_mech_known(mech))
			snprintf(reply, replylen, "538 5.7.11 Encryption required for requested authentication mechanism");
		else
			snprintf(reply, replylen, "504 5.5.4 Unrecognized authentication type");
		return SASL_BAD_MECH;
	}
	sasl_server_set_gate(*s, gate, gatearg);
	if (initial == NULL)
		return sasl_auth_step(s, (const unsigned char *)"", 0, reply, replylen);
	/* An initial response is there even when empty ("="): the client's
	 * first message, judged as such (RFC 4954 4), never answered with
	 * the 334 that asks for one. CRAM-MD5 starts with the server. */
	if (sasl_server_initial(*s) < 0) {
		sasl_server_free(s);
		snprintf(reply, replylen, "501 5.5.4 %s takes no initial response",
		    mech);
		return SASL_BAD_MECH;
	}
	n = sasl_auth_decode(initial, dec, sizeof(dec));
	if (n < 0) {
		sasl_server_free(s);
		snprintf(reply, replylen, "501 5.5.2 Invalid base64 data");
		return SASL_BAD_MECH;
	}
	return sasl_auth_step(s, dec, (size_t)n, reply, replylen);
}

int sasl_auth_next(struct sasl_server **s, const char *line, char *reply,
    size_t replylen)
{
	unsigned char dec[SASL_AUTH_DATA_MAX];
	int n;

	if (strcmp(line, "*") == 0) {
		sasl_server_free(s);
		snprintf(reply, replylen, "501 5.7.0 Authentication cancelled");
		return SASL_BAD_MECH;
	}
	n = line[0] == '\0' ? 0 : util_base64_decode(line, strlen(line), dec,
	    sizeof(dec));
	if (n < 0) {
		sasl_server_free(s);
		snprintf(reply, replylen, "501 5.5.2 Invalid base64 data");
		return SASL_BAD_MECH;
	}
	return sasl_auth_step(s, dec, (size_t)n, reply, replylen);
}
