#ifndef OD_DNS_H
#define OD_DNS_H
#endif
