#ifndef OD_SASL_H
#define OD_SASL_H
#endif
