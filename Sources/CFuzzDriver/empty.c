// CFuzzDriver only declares libFuzzer's driver (include/CFuzzDriver.h); the fuzz build links its definition.
