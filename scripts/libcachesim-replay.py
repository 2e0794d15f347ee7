#!/usr/bin/env python3
"""Replays a trace through libCacheSim's own policy code and records every request's outcome.

Usage: libcachesim-replay.py TRACE POLICY CACHE_SIZE OUT [--objects]

TRACE is an oracleGeneral file (read by libCacheSim's reader), POLICY a class of the `libcachesim` package from PyPI
(LIRS, LRU, ...), CACHE_SIZE in bytes, or in objects with --objects (every object then counts 1). OUT gets one byte per request (1 = hit, 0 = miss) followed by
one little-endian int64 per request: the bytes the cache held after it. The LIRS test in
Tests/CacheCoreTests/LibCacheSimReplayTests.swift compares Eddy with this, request for request.
"""
import sys
from array import array

import libcachesim


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--objects"]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    trace, policy, size, out = args[0], args[1], int(args[2]), args[3]
    objects = "--objects" in sys.argv[1:]
    cls = getattr(libcachesim, policy, None)
    if cls is None:
        print(f"libcachesim has no policy {policy!r}", file=sys.stderr)
        return 2
    print(f"libcachesim {libcachesim.__version__}: {policy} of {size} on {trace}", file=sys.stderr)
    cache = cls(size)
    reader = libcachesim.TraceReader(
        trace=trace,
        trace_type=libcachesim.TraceType.ORACLE_GENERAL_TRACE,
        reader_init_params=libcachesim.ReaderInitParam(ignore_obj_size=objects),
    )
    hits = array("B")
    occupied = array("q")
    for request in reader:
        hits.append(1 if cache.get(request) else 0)
        occupied.append(cache.get_occupied_byte())
    if sys.byteorder != "little":
        occupied.byteswap()
    with open(out, "wb") as f:
        hits.tofile(f)
        occupied.tofile(f)
    print(f"{len(hits)} requests, {len(hits) - sum(hits)} misses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
