#ifndef OD_SMTPC_H
#define OD_SMTPC_H
#endif
