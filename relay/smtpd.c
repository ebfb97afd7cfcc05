/* placeholder: module not yet written */
typedef int smtpd_placeholder_t;
