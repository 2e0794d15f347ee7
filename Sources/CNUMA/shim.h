#ifndef EDDY_CNUMA_SHIM_H
#define EDDY_CNUMA_SHIM_H
#include <numa.h>

/// sched_getcpu(3), declared here because glibc only declares it under _GNU_SOURCE.
extern int sched_getcpu(void);

/// The CPU the calling thread runs on, or -1.
static inline int eddy_current_cpu(void) { return sched_getcpu(); }
#endif
