// CRC32C with the CPU's CRC32 instruction (Castagnoli polynomial); the portable table-driven version in
// StreamModel is used where the instruction is missing.
//
// The instruction takes three cycles to give its result but can start one each cycle, so a single chain of
// dependent steps runs at a third of the speed the CPU allows. Long inputs are therefore cut into three equal
// lanes checksummed side by side (the second and third from a zero register), and the lanes are joined after:
// the register after A then B is the register after A moved past |B| zero bytes, XOR the register of B alone
// (the CRC is linear over GF(2)). Moving a register past a fixed number of zero bytes is linear too, so it is
// four table lookups, one per byte of the register; the tables are made once, with the instruction itself.
#include "eddy_crc32c.h"
#include <pthread.h>
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

// Lane lengths (bytes, multiples of 8): long lanes for the bulk, short lanes for what is left of it.
enum { LONG_LANE = 8192, SHORT_LANE = 256 };

// skip_long[k][v]: the register (v << 8k) moved past LONG_LANE zero bytes; skip_short likewise.
static uint32_t skip_long[4][256];
static uint32_t skip_short[4][256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2")))
static uint32_t past_zeros(uint32_t crc, size_t count) {
    uint64_t c = crc;
    for (size_t i = 0; i < count; i += 8) c = __builtin_ia32_crc32di(c, 0);
    return (uint32_t)c;
}

static void make_tables(void) {
    for (int k = 0; k < 4; k++) {
        for (uint32_t v = 0; v < 256; v++) {
            skip_long[k][v] = past_zeros(v << (8 * k), LONG_LANE);
            skip_short[k][v] = past_zeros(v << (8 * k), SHORT_LANE);
        }
    }
}

static inline uint32_t skip(const uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^ table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

// Three lanes of `lane` bytes each from p, joined into the register crc continues from.
__attribute__((target("sse4.2")))
static inline uint32_t three_lanes(uint32_t crc, const unsigned char *p, size_t lane, const uint32_t table[4][256]) {
    uint64_t c0 = crc, c1 = 0, c2 = 0;
    for (size_t i = 0; i < lane; i += 8) {
        c0 = __builtin_ia32_crc32di(c0, load64(p + i));
        c1 = __builtin_ia32_crc32di(c1, load64(p + lane + i));
        c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * lane + i));
    }
    uint32_t c = skip(table, (uint32_t)c0) ^ (uint32_t)c1;
    return skip(table, c) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2")))
uint32_t eddy_crc32c_hardware(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint32_t c = crc;
    while (count > 0 && ((uintptr_t)p & 7) != 0) {
        c = __builtin_ia32_crc32qi(c, *p++);
        count--;
    }
    if (count >= 3 * SHORT_LANE) {
        pthread_once(&tables_once, make_tables);
        while (count >= 3 * LONG_LANE) {
            c = three_lanes(c, p, LONG_LANE, skip_long);
            p += 3 * LONG_LANE;
            count -= 3 * LONG_LANE;
        }
        while (count >= 3 * SHORT_LANE) {
            c = three_lanes(c, p, SHORT_LANE, skip_short);
            p += 3 * SHORT_LANE;
            count -= 3 * SHORT_LANE;
        }
    }
    uint64_t w = c;
    while (count >= 8) {
        w = __builtin_ia32_crc32di(w, load64(p));
        p += 8;
        count -= 8;
    }
    c = (uint32_t)w;
    while (count > 0) {
        c = __builtin_ia32_crc32qi(c, *p++);
        count--;
    }
    return c;
}
#else
int eddy_crc32c_hardware_available(void) { return 0; }
uint32_t eddy_crc32c_hardware(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes;
    (void)count;
    return crc;
}
#endif
