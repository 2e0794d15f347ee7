import CNUMA

/// How a client process of the `eddy` command (a reader: `eddy read`, `eddy tail`, `eddy bench read`, `eddy bench
/// fanout`) uses malloc: answers of up to a block (1 MiB by default) each arrive in a fresh buffer, because the
/// previous one is still held by the events handed out of it, and glibc's default would serve each from a
/// mapping of its own (or trim the heap after it) and so fault in and zero a megabyte per answer, about 6 % of a
/// hot reader's CPU. Freed buffers stay in the heap for the next answer instead: up to 64 MiB of free heap is
/// kept. Library users can do the same with `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_`
/// (docs/tuning.md).
enum ClientMemory {
    /// Keeps freed answer buffers for reuse (see ``ClientMemory``); call once, early.
    static func reuseAnswerBuffers() {
        _ = eddy_keep_freed_heap(32 << 20, 64 << 20)
    }
}
