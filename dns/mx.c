/* placeholder: module not yet written */
typedef int mx_placeholder_t;
