#!/usr/bin/env python3
"""fdatasync latency of journal-like appends on this machine's disk, in a growing file and in a file whose blocks
were written before (as a recycled journal file would be). Prints p50/p99/max per mode, alternating.
With `unlink` instead: the time to delete a written 64 MiB file (a journal file a checkpoint covers) at once, and
with its pages dropped and cut down 4 MiB a step first (as the store's checkpoint thread does).

Usage: python3 scripts/fsync-probe.py [record bytes] [records] [pause ms] [directory]
       python3 scripts/fsync-probe.py unlink [directory]
       (defaults: 307200 200 0 the repository's directory; docs/benchmarks.md used 307200 200 0 and 1100 300 5)
"""
import os
import sys
import time


def run(mode: str, size: int, count: int, pause: float, directory: str) -> None:
    path = os.path.join(directory, ".fsync-probe.tmp")
    record = b"x" * size
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    try:
        if mode == "prewritten":
            chunk = b"\0" * (1 << 20)
            for _ in range((size * count >> 20) + 1):
                os.write(fd, chunk)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        took = []
        for _ in range(count):
            os.write(fd, record)
            start = time.perf_counter()
            os.fdatasync(fd)
            took.append((time.perf_counter() - start) * 1000)
            if pause:
                time.sleep(pause)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    print(f"{mode:10} {size} B x {count}: fdatasync p50 {took[len(took) // 2]:.3f} ms, p99 {p99:.3f} ms, "
          f"max {took[-1]:.3f} ms")


def unlink(directory: str) -> None:
    path = os.path.join(directory, ".fsync-probe.tmp")
    for mode in ["at once", "gradually", "at once", "gradually"]:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        chunk = b"j" * (256 << 10)
        for i in range(256):
            os.write(fd, chunk)
            if i % 4 == 3:
                os.fdatasync(fd)
        os.close(fd)
        start = time.perf_counter()
        longest = 0.0
        if mode == "gradually":
            fd = os.open(path, os.O_RDWR)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            size = os.fstat(fd).st_size
            while size > 4 << 20:
                size -= 4 << 20
                step = time.perf_counter()
                os.ftruncate(fd, size)
                longest = max(longest, time.perf_counter() - step)
                time.sleep(0.001)
            os.close(fd)
        step = time.perf_counter()
        os.unlink(path)
        end = time.perf_counter()
        longest = max(longest, end - step)
        print(f"unlink 64 MiB {mode:9}: {(end - start) * 1000:.2f} ms in all, longest single step "
              f"{longest * 1000:.2f} ms")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "unlink":
        unlink(sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 300 * 1024
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    pause = (float(sys.argv[3]) if len(sys.argv) > 3 else 0) / 1000
    directory = sys.argv[4] if len(sys.argv) > 4 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for mode in ["grow", "prewritten", "grow", "prewritten"]:
        run(mode, size, count, pause, directory)


if __name__ == "__main__":
    main()
