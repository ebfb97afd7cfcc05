/* placeholder: module not yet written */
typedef int dns_placeholder_t;
