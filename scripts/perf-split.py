#!/usr/bin/env python3
"""Splits two `perf script` dumps of a node (write-back off, then on) by what each sample's call chain is doing,
and prints the samples write-back adds per part (scripts/node-cpu.sh PERF=1 calls it; docs/benchmarks.md).

Usage: perf-split.py OFF.txt ON.txt   (each from `perf script -F comm,tid,ip,sym`)
"""
import collections
import sys

# The first rule whose words appear in a sample's call chain names its part.
PARTS = [
    ("block objects (encode, zstd, CRC32C)", ["BlockObject"]),
    ("file object store calls", ["13ObjectStorage04File", "FileObjectStore"]),
    ("flush, other", ["flushRange", "flushObject", "readSegment"]),
    ("manifests", ["Manifest"]),
    ("queue broker", ["14WriteBackQueue"]),
    ("write-back, other", ["9CacheNode9WriteBack"]),
    ("appends into blocks", ["OwnedSegment"]),
    ("store client", ["StoreClient"]),
    ("node, other", ["CacheNode"]),
    ("NIO", ["NIOPosix"]),
]


def split(path):
    parts = collections.Counter()
    for sample in open(path, errors="replace").read().split("\n\n"):
        lines = sample.strip().split("\n")
        if len(lines) < 2:
            continue
        chain = "\n".join(lines[1:])
        for name, words in PARTS:
            if any(w in chain for w in words):
                parts[name] += 1
                break
        else:
            # No Swift frame: the thread's name says where it ran (NIO's thread pool runs the file calls).
            thread = lines[0].split()[0]
            parts["thread " + ("NIO thread pool (file calls)" if "TP-#" in thread else thread)] += 1
    return parts


off, on = split(sys.argv[1]), split(sys.argv[2])
added = sum(on.values()) - sum(off.values())
print(f"samples: off {sum(off.values())}, on {sum(on.values())}, added by write-back {added}")
for name in sorted(set(off) | set(on), key=lambda n: -(on[n] - off[n])):
    extra = on[name] - off[name]
    if extra > 0:
        print(f"  {extra:6d}  {100 * extra / max(added, 1):5.1f} %  {name}")
