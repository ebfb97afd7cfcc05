/* placeholder: module not yet written */
typedef int util_placeholder_t;
