#ifndef EDDY_CNUMA_SHIM_H
#define EDDY_CNUMA_SHIM_H
#include <numa.h>
#endif
