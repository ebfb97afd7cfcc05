/*
 * sasl_private - what the SASL files share (mechanisms, limits, test
 * hooks). Only common/sasl*.c include it; everyone else uses sasl.h.
 */
#ifndef OD_SASL_PRIVATE_H
#define OD_SASL_PRIVATE_H

#include <stddef.h>

enum sasl_mech {
	MECH_SCRAM,
	MECH_CRAM,
	MECH_PLAIN,
	MECH_LOGIN,
	MECH_NONE
};

/* Longest client message we accept (RFC 4954 AUTH lines are 12288). */
#define SASL_IN_MAX	9216
#define SASL_NONCE_MAX	256

/* Shared between the sasl files (internal, not an interface). */
extern const char *const sasl_mech_names[];	/* by enum sasl_mech */
extern char *sasl_test_cnonce;	/* sasl_test_set_nonces */
extern double sasl_test_now;	/* sasl_test_set_time; < 0: real time */
enum sasl_mech sasl_mech_lookup(const char *mech);
int sasl_put(unsigned char *out, size_t outsize, size_t *outlen_r,
    const void *data, size_t len);
int sasl_nonce(char *buf, size_t size);
int sasl_name_encode(const char *s, char *dst, size_t size);
int sasl_hmac256(const unsigned char *key, size_t keylen,
    const char *msg, size_t len, unsigned char out[32]);
char *sasl_cstr(const unsigned char *in, size_t len);

#endif
