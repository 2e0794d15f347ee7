#ifndef EDDY_CFUZZDRIVER_H
#define EDDY_CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (in the fuzzer runtime that -sanitize=fuzzer links): runs the fuzzing loop with the given
/// arguments and callback. EddyFuzz calls it from its own entry point, since SwiftPM renames an executable's main.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
