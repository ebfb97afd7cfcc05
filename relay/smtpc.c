/* placeholder: module not yet written */
typedef int smtpc_placeholder_t;
