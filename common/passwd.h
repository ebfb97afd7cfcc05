/*
 * passwd - the ATRN password file, passwd(5 odrelay).
 *
 * One user a line, `#` comments and blank lines ignored:
 *
 *	NAME:SECRET:DOMAIN[,DOMAIN...]
 *
 * SECRET never holds the password itself, only what each SASL mechanism
 * needs to verify it:
 *
 *	{ODR1}cram=HEX64;scram=ITER$SALT$STOREDKEY$SERVERKEY
 *
 * cram=	the HMAC-MD5 key state of RFC 2195, laid out as Dovecot's
 *		CRAM-MD5 scheme: the MD5 chaining values A,B,C,D after
 *		hashing the opad block, then after the ipad block, each word
 *		as 4 little-endian bytes; 32 bytes as 64 hex digits.
 *		Verifies CRAM-MD5 (and PLAIN/LOGIN when scram= is absent).
 * scram=	SCRAM-SHA-256 (RFC 5802/7677): iteration count, then salt,
 *		StoredKey and ServerKey in base64, separated by `$`. Verifies
 *		SCRAM-SHA-256, and PLAIN/LOGIN by recomputing StoredKey.
 *
 * Either part may be missing (then that mechanism fails for the user).
 * For imports, Dovecot's `{CRAM-MD5}HEX64` and
 * `{SCRAM-SHA-256}ITER,SALT,STOREDKEY,SERVERKEY` are accepted too.
 * Passwords are used as their bytes (no SASLprep): fine for ASCII.
 *
 * NAME: 1..255 bytes, no ':', whitespace or control characters, not
 * starting with '#'; it is compared exactly (case matters). Domains: host names, compared case-insensitively and
 * stored in lower case; a user may ATRN exactly the domains listed.
 *
 * The stored values are password-equivalent for CRAM-MD5: the file must
 * stay mode 0600 (passwd_file_* write it so, and loading warns otherwise).
 */
#ifndef OD_PASSWD_H
#define OD_PASSWD_H

#include <stddef.h>
#include <stdio.h>

struct passwd_db;
struct passwd_user;

/* Receives "FILE:LINE: problem" (or "FILE: problem") messages. */
typedef void passwd_errfn(void *arg, const char *msg);

#define PASSWD_NAME_MAX		255
#define PASSWD_PASSWORD_MAX	1024
/* Default SCRAM iteration count (RFC 7677 minimum) and accepted range. */
#define PASSWD_SCRAM_ITER	4096
#define PASSWD_SCRAM_ITER_MIN	4096
#define PASSWD_SCRAM_ITER_MAX	1000000
#define PASSWD_SCRAM_SALT_MAX	64

/*
 * Read and check the whole file. Every problem goes to errfn (may be NULL);
 * any problem means NULL is returned, so a bad file never half-loads.
 * Small blocking read: startup and SIGHUP only.
 */
struct passwd_db *passwd_load(const char *path, passwd_errfn *errfn, void *arg);
/* A db with no user (no password file yet: every AUTH fails). */
struct passwd_db *passwd_new_empty(void);
/*
 * Reference counting: a SASL exchange keeps the db it started with alive
 * across a SIGHUP reload. passwd_free drops one reference (the last frees)
 * and sets *pw to NULL.
 */
struct passwd_db *passwd_ref(struct passwd_db *pw);
void passwd_free(struct passwd_db **pw);
size_t passwd_count(const struct passwd_db *pw);

/* NULL when there is no such user. Valid until passwd_free. */
const struct passwd_user *passwd_find(const struct passwd_db *pw,
    const char *name);
const char *passwd_user_name(const struct passwd_user *u);
size_t passwd_user_ndomains(const struct passwd_user *u);
const char *passwd_user_domain(const struct passwd_user *u, size_t i);

/* 1 if user exists and may ATRN domain (case-insensitive), else 0. */
int passwd_user_may(const struct passwd_db *pw, const char *user,
    const char *domain);
/*
 * Fill out[0..max-1] with the user's domains (pointers into pw, lower
 * case). Returns how many were stored; 0 for an unknown user.
 */
int passwd_user_domain_list(const struct passwd_db *pw, const char *user,
    const char **out, size_t max);

/*
 * Verification primitives for sasl.c. u may be NULL (unknown user): the
 * same work is done against a dummy entry so timing does not reveal which
 * names exist, and the result is a failure.
 */
/* 1 if password is right, else 0. Uses scram= (PBKDF2), else cram=. */
int passwd_user_check_password(const struct passwd_user *u,
    const char *password, size_t len);
/* HMAC-MD5(password, challenge) from the stored key state. 0, or -1 if
 * the user has no cram= part (digest_r is then filled with junk). */
int passwd_user_cram_md5(const struct passwd_user *u,
    const unsigned char *challenge, size_t len, unsigned char digest_r[16]);

struct passwd_scram {
	unsigned iter;
	const unsigned char *salt;
	size_t saltlen;
	const unsigned char *stored_key;	/* 32 bytes */
	const unsigned char *server_key;	/* 32 bytes */
};
/* 0, or -1 if the user has no scram= part. */
int passwd_user_scram(const struct passwd_user *u, struct passwd_scram *s_r);

/*
 * SCRAM-SHA-256 key derivation (RFC 5802 section 3), shared with the SASL
 * client: SaltedPassword by PBKDF2, then ClientKey, StoredKey, ServerKey
 * (32 bytes each; any output pointer may be NULL). 0 or -1.
 */
int passwd_scram_keys(const char *password, size_t len,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    unsigned char client_key_r[32], unsigned char stored_key_r[32],
    unsigned char server_key_r[32]);

/* Name and domain syntax checks used by the loader (1 = valid). */
int passwd_name_valid(const char *name);
int passwd_domain_valid(const char *domain);

/*
 * A complete file line (no newline) for name/password/domains, with a
 * fresh random salt. NULL (and err) for an invalid name, domain or
 * password (empty, too long, NUL/CR/LF). Caller frees.
 */
char *passwd_make_entry(const char *name, const char *password,
    const char *const *domains, size_t ndomains, char *err, size_t errlen);
/* Same with a given salt and iteration count (tests, imports). */
char *passwd_make_entry_salt(const char *name, const char *password,
    const char *const *domains, size_t ndomains,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    char *err, size_t errlen);

/*
 * With flags PASSWD_NO_CRAM the entry has no cram= part: the user can log
 * in with SCRAM-SHA-256, PLAIN and LOGIN (the last two over TLS when
 * auth_requires_tls), never CRAM-MD5, and the file holds nothing that is
 * password-equivalent for that user.
 */
#define PASSWD_NO_CRAM	0x1
char *passwd_make_entry_flags(const char *name, const char *password,
    const char *const *domains, size_t ndomains,
    const unsigned char *salt, size_t saltlen, unsigned iter,
    unsigned flags, char *err, size_t errlen);

/*
 * odrelayctl helpers. They lock the directory (flock), write a temporary
 * file in the same directory, fsync it, rename it over path and fsync the
 * directory, so readers see the old or the new file, never a mix. The new
 * file keeps the old file's owner (when run as root), group and mode
 * (0600, or 0640; never a bit for others); a new file is 0600.
 * Comments and other lines are kept as they are.
 */
/* Add name, or replace its line if it exists (password change). The file
 * is created when missing. 0 added, 1 replaced, -1 error (err). */
int passwd_file_add(const char *path, const char *name, const char *password,
    const char *const *domains, size_t ndomains, char *err, size_t errlen);
int passwd_file_add_flags(const char *path, const char *name,
    const char *password, const char *const *domains, size_t ndomains,
    unsigned flags, char *err, size_t errlen);
/* 0 deleted, 1 no such user, -1 error (err). */
int passwd_file_del(const char *path, const char *name, char *err,
    size_t errlen);
/* Print "NAME DOMAIN,DOMAIN MECH,MECH" per user to out. 0, or -1 (err). */
int passwd_file_list(const char *path, FILE *out, char *err, size_t errlen);

#endif
