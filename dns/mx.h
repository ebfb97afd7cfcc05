#ifndef OD_MX_H
#define OD_MX_H
#endif
