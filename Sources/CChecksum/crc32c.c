// CRC32C with the CPU's CRC32 instruction (Castagnoli polynomial), one 8-byte word a step; the portable
// table-driven version in StreamModel is used where the instruction is missing.
#include "eddy_crc32c.h"
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>

int eddy_crc32c_hardware_available(void) {
    static int known = -1;
    if (known < 0) {
        unsigned a, b, c, d;
        known = (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) ? 1 : 0;
    }
    return known;
}

__attribute__((target("sse4.2")))
uint32_t eddy_crc32c_hardware(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t c = crc;
    while (count > 0 && ((uintptr_t)p & 7) != 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        count--;
    }
    while (count >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        count -= 8;
    }
    while (count > 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        count--;
    }
    return (uint32_t)c;
}
#else
int eddy_crc32c_hardware_available(void) { return 0; }
uint32_t eddy_crc32c_hardware(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes;
    (void)count;
    return crc;
}
#endif
