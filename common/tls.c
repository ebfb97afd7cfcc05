/* placeholder: module not yet written */
typedef int tls_placeholder_t;
