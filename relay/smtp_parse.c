/* placeholder: module not yet written */
typedef int smtp_parse_placeholder_t;
