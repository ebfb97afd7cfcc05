#ifndef OD_SMTP_PARSE_H
#define OD_SMTP_PARSE_H
#endif
