/* placeholder: module not yet written */
typedef int sasl_placeholder_t;
