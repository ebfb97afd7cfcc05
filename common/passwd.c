/* placeholder: module not yet written */
typedef int passwd_placeholder_t;
