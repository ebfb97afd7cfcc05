/* placeholder: module not yet written */
typedef int lineio_placeholder_t;
