#ifndef EDDY_CNUMA_SHIM_H
#define EDDY_CNUMA_SHIM_H
#include <numa.h>

/// sched_getcpu(3), declared here because glibc only declares it under _GNU_SOURCE.
extern int sched_getcpu(void);

/// The CPU the calling thread runs on, or -1.
static inline int eddy_current_cpu(void) { return sched_getcpu(); }

#include <malloc.h>

/// Makes malloc serve allocations of at least `bytes` with their own mappings, returned to the system when freed,
/// and keeps glibc from raising that threshold by itself (it does after such frees, and then freed cache blocks
/// stay in its heaps). Returns 1 on success.
static inline int eddy_mmap_allocations_from(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

/// Gives free pages inside malloc's heaps back to the system (malloc_trim(3)): glibc returns a thread's heap
/// memory only from its top, so memory freed below live allocations stays resident otherwise.
static inline void eddy_release_free_heap(void) { (void)malloc_trim(0); }
/// Keeps freed heap memory for reuse in a process that reads large answers (a client): allocations below
/// `mmap_from` bytes come from the heap rather than their own mappings, and the heap's free top is given back to
/// the system only past `trim_from` bytes. A client that receives a 1 MiB answer into a fresh buffer each time
/// otherwise maps, faults in, zeroes and unmaps a megabyte per answer. Returns 1 on success.
static inline int eddy_keep_freed_heap(int mmap_from, int trim_from) {
    return mallopt(M_MMAP_THRESHOLD, mmap_from) && mallopt(M_TRIM_THRESHOLD, trim_from);
}
#endif
