#ifndef OD_LINEIO_H
#define OD_LINEIO_H
#endif
