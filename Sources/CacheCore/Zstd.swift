import CZstd
import Synchronization

/// zstd compression with reused contexts.
///
/// `ZSTD_compress` makes a compression context and frees it on every call: at level 1 and a 1 MiB input that is
/// about a megabyte of workspace, fresh pages the kernel faults in and zeroes, then unmaps, for every block. A
/// flush of write-back and a block kept compressed in the cache take a context from a small pool here instead
/// and give it back, so the workspace stays mapped and warm.
public enum Zstd {
    /// At most this many idle contexts are kept (one per flush worker and cache shard is plenty).
    static let poolLimit = 8
    static let idle = Mutex<[OpaqueContext]>([])

    /// A compression context (a `ZSTD_CCtx *`), owned by whoever holds it.
    struct OpaqueContext: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    /// Compresses `source` into `destination` at `level` (a frame `ZSTD_decompress` reads).
    /// - Returns: the compressed length, or nil when zstd fails (say, `destination` is too small).
    public static func compress(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, level: Int32
    ) -> Int? {
        guard let context = idle.withLock({ $0.popLast() }) ?? ZSTD_createCCtx().map(OpaqueContext.init) else {
            return nil
        }
        let n = ZSTD_compressCCtx(
            context.pointer, destination.baseAddress, destination.count, source.baseAddress, source.count, level)
        let kept = idle.withLock { pool -> Bool in
            guard pool.count < poolLimit else { return false }
            pool.append(context)
            return true
        }
        if !kept { ZSTD_freeCCtx(context.pointer) }
        return ZSTD_isError(n) == 0 ? n : nil
    }
}
