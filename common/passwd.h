#ifndef OD_PASSWD_H
#define OD_PASSWD_H
#endif
