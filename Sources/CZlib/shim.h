#ifndef EDDY_CZLIB_SHIM_H
#define EDDY_CZLIB_SHIM_H
#include <zlib.h>

/// inflateInit2 is a macro; this wrapper makes it callable from Swift. windowBits 15 + 32 accepts gzip and zlib.
static inline int eddy_inflate_init_gzip(z_stream *stream) {
    return inflateInit2(stream, 15 + 32);
}
#endif
