/*
 * cmdtable - the command table's dispatcher (see cmdtable.h for the order
 * of the checks). Tables are small (a dozen rows): a linear search over
 * the verbs costs less than one reply.
 */
#include <string.h>

#include "cmdtable.h"
#include "smtp_parse.h"

const struct cmdtable_row *
cmdtable_find(const struct cmdtable *t, const char *verb)
{
	size_t i;

	for (i = 0; i < t->nrows; i++)
		if (strcmp(t->rows[i].verb, verb) == 0)
			return &t->rows[i];
	return NULL;
}

/* The row's needs, with what the session requires of every command. */
static unsigned
cmdtable_needs(const struct cmdtable_row *r, unsigned have)
{
	unsigned need = r->need;

	if ((have & CMDT_TLS_REQUIRED) && !(r->flags & CMDT_PRE_TLS))
		need |= CMDT_TLS;
	if ((have & CMDT_AUTH_REQUIRED) && !(r->flags & CMDT_PRE_AUTH))
		need |= CMDT_AUTHED;
	return need;
}

int
cmdtable_dispatch(const struct cmdtable *t, void *sess, unsigned state,
    unsigned have, char *line, size_t len)
{
	char verb[SMTP_VERB_MAX + 1];
	const struct cmdtable_row *r;
	const char *carg;
	char *arg;
	size_t arglen, i;
	unsigned need;
	int rc;

	rc = smtp_parse_command(line, len, verb, sizeof(verb), &carg, &arglen);
	if (rc != 0)
		return t->answer(sess, rc == SMTP_PARSE_ECHAR &&
		    t->badchar != NULL ? t->badchar : t->unknown,
		    CMDT_WHY_UNKNOWN);
	if ((r = cmdtable_find(t, verb)) == NULL)
		return t->answer(sess, t->unknown, CMDT_WHY_UNKNOWN);
	need = cmdtable_needs(r, have);
	for (i = 0; i < t->nneeds; i++)
		if ((need & t->needs[i].have) && !(have & t->needs[i].have))
			return t->answer(sess, t->needs[i].reply,
			    CMDT_WHY_REFUSED);
	if (((r->flags & CMDT_NOARG) && arglen != 0) ||
	    ((r->flags & CMDT_ARG) && arglen == 0))
		return t->answer(sess, r->syntax, CMDT_WHY_REFUSED);
	if ((r->states != 0 && !(r->states & CMDT_ST(state))) ||
	    ((r->flags & CMDT_NOT_TLS) && (have & CMDT_TLS)))
		return t->answer(sess, r->wrong_state, CMDT_WHY_REFUSED);
	/* the argument lies inside line: end it for the handler */
	arg = line + (carg - line);
	arg[arglen] = '\0';
	if (r->check != NULL && r->check(sess, arg, arglen))
		return 0;
	if ((r->flags & CMDT_GROUP_END) && (have & CMDT_PENDING))
		return t->desync(sess);
	if (r->fn == NULL)
		return t->answer(sess, r->reply, (r->flags & CMDT_ERROR) ?
		    CMDT_WHY_REFUSED : CMDT_WHY_REPLY);
	return r->fn(sess, arg, arglen);
}
