#ifndef EDDY_CIOURING_SHIM_H
#define EDDY_CIOURING_SHIM_H
// glibc's headers must be seen before liburing.h defines _GNU_SOURCE, or clean debug builds fail
// with "'__fds_bits' from module 'SwiftGlibc' is not present" (see shared/notes/platform.md).
#include <sys/types.h>
#include <sys/select.h>
#include <fcntl.h>
#include <liburing.h>

/// Macros are not imported into Swift; these constants stand in for them.
static const unsigned char eddy_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const unsigned int eddy_IORING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;

/// fallocate(2), declared here because glibc only declares it under _GNU_SOURCE.
extern int fallocate(int fd, int mode, off_t offset, off_t len);

/// Frees the blocks of [0, length) of a file without changing its size
/// (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE). Returns 0 or -1 with errno set.
static inline int eddy_punch_hole(int fd, off_t length) { return fallocate(fd, 0x03, 0, length); }

/// sync_file_range(2), declared here for the same reason as fallocate.
extern int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);

/// Starts writeback of [offset, offset + length) without waiting (SYNC_FILE_RANGE_WRITE), so a later
/// fdatasync finds little left to write.
static inline int eddy_start_writeback(int fd, off_t offset, off_t length) {
    return sync_file_range(fd, offset, length, 2);
}
#endif
