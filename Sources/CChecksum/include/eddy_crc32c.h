#ifndef EDDY_CRC32C_H
#define EDDY_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has the CRC32C instruction (SSE 4.2 on x86-64); checked once.
int eddy_crc32c_hardware_available(void);

/// CRC32C of `count` bytes at `bytes` with the CPU's CRC32C instruction, continuing from the raw (not inverted)
/// register value `crc`. Call only when eddy_crc32c_hardware_available() returned 1.
uint32_t eddy_crc32c_hardware(uint32_t crc, const void *bytes, size_t count);
#endif
