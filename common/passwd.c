/*
 * passwd - the ATRN password file: parse, look up, verify, rewrite.
 * Format and security notes are in passwd.h.
 */
/* The CRAM-MD5 key state needs MD5's chaining values, which only the
 * low-level (deprecated in OpenSSL 3) MD5 API exposes. */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <sys/file.h>
#include <sys/stat.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/sha.h>

#include "log.h"
#include "passwd.h"
#include "util.h"
#include "xmalloc.h"

#define PASSWD_LINE_MAX		65536
#define PASSWD_FILE_MAX		(64 * 1024 * 1024)

struct passwd_user {
	char *name;
	char **domains;
	size_t ndomains;
	unsigned line;
	int has_cram;
	uint32_t cram_in[4], cram_out[4];
	int has_scram;
	unsigned iter;
	unsigned char salt[PASSWD_SCRAM_SALT_MAX];
	size_t saltlen;
	unsigned char stored_key[32], server_key[32];
};

struct passwd_db {
	int refs;			/* passwd_ref; passwd_free drops one */
	struct passwd_user *users;	/* sorted by name */
	size_t n;
};

/* Stands in for unknown users so failures cost the same as real ones. */
static struct passwd_user passwd_dummy = {
	.name = (char *)"", .has_cram = 1, .has_scram = 1,
	.iter = PASSWD_SCRAM_ITER, .saltlen = 16,
};

/* ---- syntax ---- */

int passwd_name_valid(const char *name)
{
	const unsigned char *p;
	size_t len = strlen(name);

	if (len == 0 || len > PASSWD_NAME_MAX)
		return 0;
	/* A leading '#' would read back as a comment. */
	if (*name == '#')
		return 0;
	for (p = (const unsigned char *)name; *p != '\0'; p++)
		if (*p <= ' ' || *p == 0x7f || *p == ':')
			return 0;
	return 1;
}

int passwd_domain_valid(const char *d)
{
	/* A user's domain is a mail domain: at least two labels. */
	return util_domain_valid(d) && strchr(d, '.') != NULL;
}

static int passwd_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* ---- crypto ---- */

/* MD5 chaining values after one 64-byte block of key ^ pad. */
static void passwd_md5_pad_state(const unsigned char key[64], unsigned char pad,
    uint32_t state_r[4])
{
	unsigned char block[64];
	MD5_CTX ctx;
	int i;

	for (i = 0; i < 64; i++)
		block[i] = key[i] ^ pad;
	MD5_Init(&ctx);
	MD5_Update(&ctx, block, sizeof(block));
	state_r[0] = ctx.A;
	state_r[1] = ctx.B;
	state_r[2] = ctx.C;
	state_r[3] = ctx.D;
	OPENSSL_cleanse(block, sizeof(block));
	OPENSSL_cleanse(&ctx, sizeof(ctx));
}

static void passwd_cram_state(const char *password, size_t len,
    uint32_t in_r[4], uint32_t out_r[4])
{
	unsigned char key[64];

	memset(key, 0, sizeof(key));
	/* RFC 2104: keys longer than the block are hashed first. */
	if (len > sizeof(key))
		MD5((const unsigned char *)password, len, key);
	else
		memcpy(key, password, len);
	passwd_md5_pad_state(key, 0x36, in_r);
	passwd_md5_pad_state(key, 0x5c, out_r);
	OPENSSL_cleanse(key, sizeof(key));
}

/* Continue an MD5 whose first 64-byte block is already in state. */
static void passwd_md5_resume(const uint32_t state[4], const unsigned char *data,
    size_t len, unsigned char out[16])
{
	MD5_CTX ctx;

	memset(&ctx, 0, sizeof(ctx));
	ctx.A = state[0];
	ctx.B = state[1];
	ctx.C = state[2];
	ctx.D = state[3];
	ctx.Nl = 512;	/* bits already hashed */
	MD5_Update(&ctx, data, len);
	MD5_Final(out, &ctx);
}

int passwd_user_cram_md5(const struct passwd_user *u,
    const unsigned char *challenge, size_t len, unsigned char digest_r[16])
{
	unsigned char inner[16];
	int rc = 0;

	if (u == NULL || !u->has_cram) {
		u = &passwd_dummy;
		rc = -1;
	}
	passwd_md5_resume(u->cram_in, challenge, len, inner);
	passwd_md5_resume(u->cram_out, inner, sizeof(inner), digest_r);
	return rc;
}

int passwd_scram_keys(const char *password, size_t len,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    unsigned char client_key_r[32], unsigned char stored_key_r[32],
    unsigned char server_key_r[32])
{
	unsigned char salted[32], ckey[32];
	unsigned int mdlen;
	int rc = -1;

	if (iter == 0 || iter > INT_MAX || len > INT_MAX || saltlen > INT_MAX)
		return -1;
	if (PKCS5_PBKDF2_HMAC(password, (int)len, salt, (int)saltlen, (int)iter,
	    EVP_sha256(), sizeof(salted), salted) != 1)
		goto out;
	mdlen = sizeof(ckey);
	if (HMAC(EVP_sha256(), salted, sizeof(salted),
	    (const unsigned char *)"Client Key", 10, ckey, &mdlen) == NULL)
		goto out;
	if (client_key_r != NULL)
		memcpy(client_key_r, ckey, 32);
	if (stored_key_r != NULL)
		SHA256(ckey, sizeof(ckey), stored_key_r);
	if (server_key_r != NULL) {
		mdlen = 32;
		if (HMAC(EVP_sha256(), salted, sizeof(salted),
		    (const unsigned char *)"Server Key", 10, server_key_r,
		    &mdlen) == NULL)
			goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(ckey, sizeof(ckey));
	return rc;
}

int passwd_user_check_password(const struct passwd_user *u,
    const char *password, size_t len)
{
	unsigned char stored[32];
	uint32_t in[4], out[4];
	int ok = 1;

	if (u == NULL) {
		u = &passwd_dummy;
		ok = 0;
	}
	if (u->has_scram) {
		if (passwd_scram_keys(password, len, u->salt, u->saltlen,
		    u->iter, NULL, stored, NULL) < 0)
			return 0;
		ok &= CRYPTO_memcmp(stored, u->stored_key, 32) == 0;
		OPENSSL_cleanse(stored, sizeof(stored));
		return ok;
	}
	if (u->has_cram) {
		passwd_cram_state(password, len, in, out);
		ok &= CRYPTO_memcmp(in, u->cram_in, sizeof(in)) == 0;
		ok &= CRYPTO_memcmp(out, u->cram_out, sizeof(out)) == 0;
		OPENSSL_cleanse(in, sizeof(in));
		OPENSSL_cleanse(out, sizeof(out));
		return ok;
	}
	return 0;
}

int passwd_user_scram(const struct passwd_user *u, struct passwd_scram *s_r)
{
	if (u == NULL || !u->has_scram)
		return -1;
	s_r->iter = u->iter;
	s_r->salt = u->salt;
	s_r->saltlen = u->saltlen;
	s_r->stored_key = u->stored_key;
	s_r->server_key = u->server_key;
	return 0;
}

/* ---- secret encoding ---- */

/* Dovecot's layout: the opad state, then the ipad state. */
static void passwd_cram_hex(const uint32_t in[4], const uint32_t out[4],
    char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	const uint32_t *w;
	int i, b, o = 0;

	for (i = 0; i < 8; i++) {
		w = i < 4 ? &out[i] : &in[i - 4];
		for (b = 0; b < 4; b++) {
			unsigned v = (*w >> (8 * b)) & 0xff;

			hex[o++] = digits[v >> 4];
			hex[o++] = digits[v & 15];
		}
	}
	hex[o] = '\0';
}

static int passwd_cram_parse(const char *s, size_t len, struct passwd_user *u)
{
	size_t i;
	int hi, lo;
	uint32_t *w;

	if (len != 64)
		return -1;
	memset(u->cram_in, 0, sizeof(u->cram_in));
	memset(u->cram_out, 0, sizeof(u->cram_out));
	for (i = 0; i < 32; i++) {
		hi = passwd_hexval((unsigned char)s[2 * i]);
		lo = passwd_hexval((unsigned char)s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		w = i < 16 ? &u->cram_out[i / 4] : &u->cram_in[(i - 16) / 4];
		*w |= (uint32_t)(hi << 4 | lo) << (8 * (i % 4));
	}
	u->has_cram = 1;
	return 0;
}

/* Decode exactly want bytes (want 0: 1..max bytes) of base64. */
static int passwd_b64_field(const char *s, size_t len, unsigned char *dst,
    size_t max, size_t want, size_t *len_r)
{
	unsigned char buf[128];
	int n;

	if (len == 0 || len > 4 * sizeof(buf) / 3)
		return -1;
	n = util_base64_decode(s, len, buf, sizeof(buf));
	if (n <= 0 || (size_t)n > max || (want != 0 && (size_t)n != want))
		return -1;
	memcpy(dst, buf, (size_t)n);
	if (len_r != NULL)
		*len_r = (size_t)n;
	return 0;
}

/* "ITER<sep>SALT<sep>STORED<sep>SERVER" */
static int passwd_scram_parse(const char *s, size_t len, char sep,
    struct passwd_user *u, const char **why)
{
	const char *f[4], *end = s + len, *p;
	size_t flen[4];
	unsigned long iter = 0;
	int i;

	p = s;
	for (i = 0; i < 4; i++) {
		const char *q = memchr(p, sep, (size_t)(end - p));

		if (i == 3) {
			if (q != NULL)
				goto syntax;
			q = end;
		} else if (q == NULL)
			goto syntax;
		f[i] = p;
		flen[i] = (size_t)(q - p);
		p = q + 1;
	}
	if (flen[0] == 0 || flen[0] > 8)
		goto syntax;
	for (p = f[0]; p < f[0] + flen[0]; p++) {
		if (*p < '0' || *p > '9')
			goto syntax;
		iter = iter * 10 + (unsigned long)(*p - '0');
	}
	if (iter < PASSWD_SCRAM_ITER_MIN || iter > PASSWD_SCRAM_ITER_MAX) {
		*why = "SCRAM iteration count out of range (4096..1000000)";
		return -1;
	}
	u->iter = (unsigned)iter;
	if (passwd_b64_field(f[1], flen[1], u->salt, sizeof(u->salt), 0,
	    &u->saltlen) < 0 ||
	    passwd_b64_field(f[2], flen[2], u->stored_key, 32, 32, NULL) < 0 ||
	    passwd_b64_field(f[3], flen[3], u->server_key, 32, 32, NULL) < 0)
		goto syntax;
	u->has_scram = 1;
	return 0;
syntax:
	*why = "bad SCRAM-SHA-256 data";
	return -1;
}

static int passwd_secret_parse(const char *s, struct passwd_user *u,
    const char **why)
{
	const char *item, *semi, *val;
	size_t len;

	if (strncmp(s, "{CRAM-MD5}", 10) == 0) {
		if (passwd_cram_parse(s + 10, strlen(s + 10), u) < 0) {
			*why = "bad CRAM-MD5 data (want 64 hex digits)";
			return -1;
		}
		return 0;
	}
	if (strncmp(s, "{SCRAM-SHA-256}", 15) == 0)
		return passwd_scram_parse(s + 15, strlen(s + 15), ',', u, why);
	if (strncmp(s, "{ODR1}", 6) != 0) {
		*why = "unknown password scheme (want {ODR1}...)";
		return -1;
	}
	for (item = s + 6; *item != '\0'; item = semi + (*semi == ';')) {
		semi = strchr(item, ';');
		if (semi == NULL)
			semi = item + strlen(item);
		len = (size_t)(semi - item);
		if (len > 5 && strncmp(item, "cram=", 5) == 0 && !u->has_cram) {
			val = item + 5;
			if (passwd_cram_parse(val, len - 5, u) < 0) {
				*why = "bad cram= data (want 64 hex digits)";
				return -1;
			}
		} else if (len > 6 && strncmp(item, "scram=", 6) == 0 &&
		    !u->has_scram) {
			if (passwd_scram_parse(item + 6, len - 6, '$', u, why) < 0)
				return -1;
		} else {
			*why = "bad {ODR1} item (want cram=...;scram=...)";
			return -1;
		}
	}
	if (!u->has_cram && !u->has_scram) {
		*why = "empty secret";
		return -1;
	}
	return 0;
}

/* ---- loading ---- */

static void passwd_report(passwd_errfn *errfn, void *arg, const char *path,
    unsigned line, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void passwd_report(passwd_errfn *errfn, void *arg, const char *path,
    unsigned line, const char *fmt, ...)
{
	char msg[512], full[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(full, sizeof(full), "%s:%u: %s", path, line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", path, msg);
	if (errfn != NULL)
		errfn(arg, full);
}

static void passwd_user_clear(struct passwd_user *u)
{
	size_t i;

	free(u->name);
	for (i = 0; i < u->ndomains; i++)
		free(u->domains[i]);
	free(u->domains);
	OPENSSL_cleanse(u, sizeof(*u));
}

static char *passwd_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* Parse one non-comment line into u. NULL or a reason. */
static const char *passwd_parse_line(char *line, struct passwd_user *u)
{
	char *name, *secret, *doms, *d, *next;
	const char *why = NULL;
	size_t i;

	memset(u, 0, sizeof(*u));
	name = line;
	if ((secret = strchr(name, ':')) == NULL)
		return "want NAME:SECRET:DOMAIN[,DOMAIN...]";
	*secret++ = '\0';
	if ((doms = strchr(secret, ':')) == NULL)
		return "want NAME:SECRET:DOMAIN[,DOMAIN...]";
	*doms++ = '\0';
	if (strchr(doms, ':') != NULL)
		return "too many ':' fields";
	name = passwd_trim(name);
	secret = passwd_trim(secret);
	if (!passwd_name_valid(name))
		return "invalid user name";
	if (passwd_secret_parse(secret, u, &why) < 0)
		return why;
	for (d = doms; d != NULL; d = next) {
		next = strchr(d, ',');
		if (next != NULL)
			*next++ = '\0';
		d = passwd_trim(d);
		util_lowercase(d);
		if (!passwd_domain_valid(d)) {
			passwd_user_clear(u);
			return *d == '\0' ? "empty domain" : "invalid domain";
		}
		for (i = 0; i < u->ndomains; i++)
			if (strcmp(u->domains[i], d) == 0)
				break;
		if (i < u->ndomains)
			continue;
		u->domains = xreallocarray(u->domains, u->ndomains + 1,
		    sizeof(*u->domains));
		u->domains[u->ndomains++] = xstrdup(d);
	}
	u->name = xstrdup(name);
	return NULL;
}

static int passwd_user_cmp(const void *a, const void *b)
{
	const struct passwd_user *ua = a, *ub = b;
	int c = strcmp(ua->name, ub->name);

	if (c != 0)
		return c;
	return ua->line < ub->line ? -1 : ua->line > ub->line;
}

struct passwd_db *passwd_load(const char *path, passwd_errfn *errfn, void *arg)
{
	struct passwd_db *pw;
	struct passwd_user u;
	struct stat st;
	FILE *fp;
	char *line = NULL, *p;
	size_t cap = 0, alloc = 0, i;
	ssize_t len;
	unsigned lineno = 0;
	const char *why;
	int errors = 0;

	if ((fp = fopen(path, "re")) == NULL) {
		passwd_report(errfn, arg, path, 0, "cannot open: %s",
		    strerror(errno));
		return NULL;
	}
	if (fstat(fileno(fp), &st) == 0) {
		if (st.st_size > PASSWD_FILE_MAX) {
			passwd_report(errfn, arg, path, 0, "file too large");
			fclose(fp);
			return NULL;
		}
		if (st.st_mode & 077)
			log_warn("passwd: %s is readable by others (mode %03o); "
			    "its secrets are password-equivalent, use 0600",
			    path, (unsigned)(st.st_mode & 0777));
	}
	pw = xcalloc(1, sizeof(*pw));
	pw->refs = 1;
	while ((len = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		if (len > PASSWD_LINE_MAX) {
			passwd_report(errfn, arg, path, lineno, "line too long");
			errors++;
			continue;
		}
		if ((size_t)len != strlen(line)) {
			passwd_report(errfn, arg, path, lineno, "NUL byte in line");
			errors++;
			continue;
		}
		p = passwd_trim(line);
		if (*p == '\0' || *p == '#')
			continue;
		if ((why = passwd_parse_line(p, &u)) != NULL) {
			passwd_report(errfn, arg, path, lineno, "%s", why);
			errors++;
			continue;
		}
		u.line = lineno;
		if (pw->n == alloc) {
			alloc = alloc ? alloc * 2 : 16;
			pw->users = xreallocarray(pw->users, alloc,
			    sizeof(*pw->users));
		}
		pw->users[pw->n++] = u;
	}
	if (ferror(fp)) {
		passwd_report(errfn, arg, path, 0, "read error: %s",
		    strerror(errno));
		errors++;
	}
	free(line);
	fclose(fp);
	if (pw->n > 1)
		qsort(pw->users, pw->n, sizeof(*pw->users), passwd_user_cmp);
	for (i = 1; i < pw->n; i++)
		if (strcmp(pw->users[i - 1].name, pw->users[i].name) == 0) {
			passwd_report(errfn, arg, path, pw->users[i].line,
			    "duplicate user %s (first on line %u)",
			    pw->users[i].name, pw->users[i - 1].line);
			errors++;
		}
	if (errors > 0) {
		passwd_free(&pw);
		return NULL;
	}
	return pw;
}

struct passwd_db *passwd_new_empty(void)
{
	struct passwd_db *pw = xcalloc(1, sizeof(*pw));

	pw->refs = 1;
	return pw;
}

struct passwd_db *passwd_ref(struct passwd_db *pw)
{
	if (pw != NULL)
		pw->refs++;
	return pw;
}

void passwd_free(struct passwd_db **pwp)
{
	struct passwd_db *pw = *pwp;
	size_t i;

	if (pw == NULL)
		return;
	*pwp = NULL;
	if (--pw->refs > 0)
		return;
	for (i = 0; i < pw->n; i++)
		passwd_user_clear(&pw->users[i]);
	free(pw->users);
	free(pw);
	*pwp = NULL;
}

size_t passwd_count(const struct passwd_db *pw)
{
	return pw == NULL ? 0 : pw->n;
}

static int passwd_find_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct passwd_user *)elem)->name);
}

const struct passwd_user *passwd_find(const struct passwd_db *pw,
    const char *name)
{
	if (pw == NULL || pw->n == 0 || name == NULL)
		return NULL;
	return bsearch(name, pw->users, pw->n, sizeof(*pw->users),
	    passwd_find_cmp);
}

const char *passwd_user_name(const struct passwd_user *u)
{
	return u->name;
}

size_t passwd_user_ndomains(const struct passwd_user *u)
{
	return u->ndomains;
}

const char *passwd_user_domain(const struct passwd_user *u, size_t i)
{
	return i < u->ndomains ? u->domains[i] : NULL;
}

int passwd_user_may(const struct passwd_db *pw, const char *user,
    const char *domain)
{
	const struct passwd_user *u = passwd_find(pw, user);
	size_t i;

	if (u == NULL || domain == NULL)
		return 0;
	for (i = 0; i < u->ndomains; i++)
		if (strcasecmp(u->domains[i], domain) == 0)
			return 1;
	return 0;
}

int passwd_user_domain_list(const struct passwd_db *pw, const char *user,
    const char **out, size_t max)
{
	const struct passwd_user *u = passwd_find(pw, user);
	size_t i;

	if (u == NULL)
		return 0;
	for (i = 0; i < u->ndomains && i < max; i++)
		out[i] = u->domains[i];
	return (int)i;
}

/* ---- making entries ---- */

static int passwd_password_valid(const char *password, char *err,
    size_t errlen)
{
	size_t len = strlen(password);

	if (len == 0) {
		snprintf(err, errlen, "empty password");
		return 0;
	}
	if (len > PASSWD_PASSWORD_MAX) {
		snprintf(err, errlen, "password longer than %d bytes",
		    PASSWD_PASSWORD_MAX);
		return 0;
	}
	if (strpbrk(password, "\r\n") != NULL) {
		snprintf(err, errlen, "password contains a line break");
		return 0;
	}
	return 1;
}

char *passwd_make_entry_salt(const char *name, const char *password,
    const char *const *domains, size_t ndomains,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    char *err, size_t errlen)
{
	return passwd_make_entry_flags(name, password, domains, ndomains, salt,
	    saltlen, iter, 0, err, errlen);
}

char *passwd_make_entry_flags(const char *name, const char *password,
    const char *const *domains, size_t ndomains,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    unsigned flags, char *err, size_t errlen)
{
	uint32_t in[4], out[4];
	unsigned char stored[32], server[32];
	char hex[65], salt64[PASSWD_SCRAM_SALT_MAX * 2], st64[64], sv64[64];
	char *doms, *d, *line;
	size_t i, dlen = 1;

	if (!passwd_name_valid(name)) {
		snprintf(err, errlen, "invalid user name");
		return NULL;
	}
	if (!passwd_password_valid(password, err, errlen))
		return NULL;
	if (ndomains == 0) {
		snprintf(err, errlen, "no domains given");
		return NULL;
	}
	if (saltlen == 0 || saltlen > PASSWD_SCRAM_SALT_MAX ||
	    iter < PASSWD_SCRAM_ITER_MIN || iter > PASSWD_SCRAM_ITER_MAX) {
		snprintf(err, errlen, "bad salt or iteration count");
		return NULL;
	}
	for (i = 0; i < ndomains; i++) {
		if (!passwd_domain_valid(domains[i])) {
			snprintf(err, errlen, "invalid domain: %.100s",
			    domains[i]);
			return NULL;
		}
		dlen += strlen(domains[i]) + 1;
	}
	doms = xmalloc(dlen);
	d = doms;
	for (i = 0; i < ndomains; i++) {
		d += sprintf(d, "%s%s", i ? "," : "", domains[i]);
	}
	util_lowercase(doms);

	passwd_cram_state(password, strlen(password), in, out);
	passwd_cram_hex(in, out, hex);
	if (passwd_scram_keys(password, strlen(password), salt, saltlen, iter,
	    NULL, stored, server) < 0 ||
	    util_base64_encode(salt, saltlen, salt64, sizeof(salt64)) < 0 ||
	    util_base64_encode(stored, 32, st64, sizeof(st64)) < 0 ||
	    util_base64_encode(server, 32, sv64, sizeof(sv64)) < 0) {
		snprintf(err, errlen, "key derivation failed");
		free(doms);
		return NULL;
	}
	if (flags & PASSWD_NO_CRAM)
		line = xasprintf("%s:{ODR1}scram=%u$%s$%s$%s:%s", name,
		    iter, salt64, st64, sv64, doms);
	else
		line = xasprintf("%s:{ODR1}cram=%s;scram=%u$%s$%s$%s:%s", name,
		    hex, iter, salt64, st64, sv64, doms);
	OPENSSL_cleanse(in, sizeof(in));
	OPENSSL_cleanse(out, sizeof(out));
	OPENSSL_cleanse(hex, sizeof(hex));
	free(doms);
	return line;
}

char *passwd_make_entry(const char *name, const char *password,
    const char *const *domains, size_t ndomains, char *err, size_t errlen)
{
	unsigned char salt[16];

	if (util_random(salt, sizeof(salt)) < 0) {
		snprintf(err, errlen, "no randomness for the salt");
		return NULL;
	}
	return passwd_make_entry_salt(name, password, domains, ndomains,
	    salt, sizeof(salt), PASSWD_SCRAM_ITER, err, errlen);
}

/* ---- rewriting the file ---- */

/* The user name a line defines, or 0 length for comments/blank lines. */
static size_t passwd_line_name(const char *line, const char **name_r)
{
	const char *p = line, *colon;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '#' || *p == '\0' || *p == '\n' || *p == '\r')
		return 0;
	colon = strchr(p, ':');
	if (colon == NULL)
		return 0;
	*name_r = p;
	while (colon > p && (colon[-1] == ' ' || colon[-1] == '\t'))
		colon--;
	return (size_t)(colon - p);
}

/*
 * Rewrite path, replacing (newline != NULL) or removing (NULL) the line of
 * user name; with newline and no such line, append it. Returns -1 on error,
 * else whether the user was found (1) or not (0).
 */
static int passwd_rewrite(const char *path, const char *name,
    const char *newline, char *err, size_t errlen)
{
	char *dircopy = NULL, *tmp = NULL, *line = NULL, *dir;
	const char *lname = NULL;
	size_t cap = 0, nlen = strlen(name), ln;
	ssize_t len;
	int dfd = -1, tfd = -1, found = 0, rc = -1, lastnl = 1;
	FILE *in = NULL, *out = NULL;
	struct stat st;
	int have_st = 0;

	dircopy = xstrdup(path);
	dir = dirname(dircopy);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	/* Serialise concurrent odrelayctl runs; the file itself is replaced,
	 * so the stable directory carries the lock. */
	if (flock(dfd, LOCK_EX) < 0) {
		snprintf(err, errlen, "%s: lock: %s", dir, strerror(errno));
		goto out;
	}
	in = fopen(path, "re");
	if (in == NULL && errno != ENOENT) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (in != NULL && fstat(fileno(in), &st) == 0)
		have_st = 1;
	tmp = xasprintf("%s.tmpXXXXXX", path);
	tfd = mkostemp(tmp, O_CLOEXEC);
	if (tfd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	/* The rewrite keeps the file's owner, group and mode (a group
	 * read bit included, never a bit for others); a new file is 0600,
	 * as root root:root: only odrelayd's auth process reads it. */
	if (fchmod(tfd, have_st ? (st.st_mode & 0640) | 0600 : 0600) < 0) {
		snprintf(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
		goto out;
	}
	if (have_st && geteuid() == 0 &&
	    (st.st_uid != 0 || st.st_gid != 0) &&
	    fchown(tfd, st.st_uid, st.st_gid) < 0) {
		snprintf(err, errlen, "%s: chown: %s", tmp, strerror(errno));
		goto out;
	}
	if ((out = fdopen(tfd, "w")) == NULL) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	tfd = -1;
	while (in != NULL && (len = getline(&line, &cap, in)) >= 0) {
		ln = passwd_line_name(line, &lname);
		lastnl = len > 0 && line[len - 1] == '\n';
		if (ln == nlen && memcmp(lname, name, nlen) == 0) {
			if (newline != NULL && !found)
				fprintf(out, "%s\n", newline);
			found = 1;
			lastnl = 1;
			continue;
		}
		fwrite(line, 1, (size_t)len, out);
	}
	if (in != NULL && ferror(in)) {
		snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
		goto out;
	}
	if (newline != NULL && !found)
		fprintf(out, "%s%s\n", lastnl ? "" : "\n", newline);
	if (fflush(out) != 0 || ferror(out) || fsync(fileno(out)) < 0) {
		snprintf(err, errlen, "%s: write: %s", tmp, strerror(errno));
		goto out;
	}
	if (fclose(out) != 0) {
		out = NULL;
		snprintf(err, errlen, "%s: write: %s", tmp, strerror(errno));
		goto out;
	}
	out = NULL;
	if (newline == NULL && !found) {
		/* Nothing to delete: leave the file untouched. */
		rc = 0;
		goto out;
	}
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "rename %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (fsync(dfd) < 0) {
		snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto out;
	}
	rc = found;
out:
	if (out != NULL)
		fclose(out);
	if (tfd >= 0)
		close(tfd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	if (in != NULL)
		fclose(in);
	if (dfd >= 0)
		close(dfd);	/* releases the lock */
	free(line);
	free(dircopy);
	return rc;
}

int passwd_file_add(const char *path, const char *name, const char *password,
    const char *const *domains, size_t ndomains, char *err, size_t errlen)
{
	return passwd_file_add_flags(path, name, password, domains, ndomains,
	    0, err, errlen);
}

int passwd_file_add_flags(const char *path, const char *name,
    const char *password, const char *const *domains, size_t ndomains,
    unsigned flags, char *err, size_t errlen)
{
	unsigned char salt[16];
	char *entry;
	int rc;

	if (util_random(salt, sizeof(salt)) < 0) {
		snprintf(err, errlen, "no randomness for the salt");
		return -1;
	}
	entry = passwd_make_entry_flags(name, password, domains, ndomains,
	    salt, sizeof(salt), PASSWD_SCRAM_ITER, flags, err, errlen);
	if (entry == NULL)
		return -1;
	rc = passwd_rewrite(path, name, entry, err, errlen);
	OPENSSL_cleanse(entry, strlen(entry));
	free(entry);
	return rc;
}

int passwd_file_del(const char *path, const char *name, char *err,
    size_t errlen)
{
	int rc;

	if (!passwd_name_valid(name)) {
		snprintf(err, errlen, "invalid user name");
		return -1;
	}
	rc = passwd_rewrite(path, name, NULL, err, errlen);
	if (rc < 0)
		return -1;
	return rc ? 0 : 1;
}

struct passwd_list_err {
	char *err;
	size_t errlen;
	int n;
};

static void passwd_list_errfn(void *arg, const char *msg)
{
	struct passwd_list_err *e = arg;

	if (e->n++ == 0)
		snprintf(e->err, e->errlen, "%s", msg);
}

int passwd_file_list(const char *path, FILE *out, char *err, size_t errlen)
{
	struct passwd_list_err e = { err, errlen, 0 };
	struct passwd_db *pw;
	const struct passwd_user *u;
	size_t i, j;

	if ((pw = passwd_load(path, passwd_list_errfn, &e)) == NULL)
		return -1;
	for (i = 0; i < pw->n; i++) {
		u = &pw->users[i];
		fprintf(out, "%s ", u->name);
		for (j = 0; j < u->ndomains; j++)
			fprintf(out, "%s%s", j ? "," : "", u->domains[j]);
		fprintf(out, " %s%s%s\n",
		    u->has_scram ? "SCRAM-SHA-256," : "",
		    u->has_cram ? "CRAM-MD5," : "",
		    "PLAIN,LOGIN");
	}
	passwd_free(&pw);
	return 0;
}
