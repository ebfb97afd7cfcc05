/* placeholder: module not yet written */
typedef int config_placeholder_t;
