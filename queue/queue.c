/* placeholder: module not yet written */
typedef int queue_placeholder_t;
