import CZstd
import NIOCore
import StreamModel

/// How blocks are kept in memory.
public enum Residency: Sendable, Equatable {
    /// As they are.
    case plain
    /// zstd-compressed at `level`: more blocks per byte, some CPU per hit. Blocks that do not shrink are kept
    /// plain.
    case zstd(level: Int32)
}

/// BlockStorage owns one cached block's bytes within the arena's budget; the memory goes back when the last
/// reference does, so a reader that took a block just before its eviction still reads valid bytes.
///
/// A plain block is a `ByteBuffer` of exactly its bytes, handed out as it is: serving it to any number of
/// connections shares the one copy (zero copy). A compressed block lives in arena memory (NUMA-placed) and is
/// decompressed into a new buffer per hit.
final class BlockStorage: Sendable {
    enum Content: @unchecked Sendable {
        case plain(ByteBuffer)
        /// Arena memory, owned by this storage; never written after creation.
        case compressed(UnsafeMutableRawBufferPointer)
    }

    let arena: BlockArena
    let content: Content
    /// The block's length before compression.
    let length: Int
    /// The bytes charged to the arena: the stored size.
    let storedCount: Int

    private init(arena: BlockArena, content: Content, length: Int, storedCount: Int) {
        self.arena = arena
        self.content = content
        self.length = length
        self.storedCount = storedCount
    }

    deinit {
        switch content {
        case .plain: arena.release(storedCount)
        case .compressed(let memory): arena.free(memory)
        }
    }

    /// What a block will be stored as: its bytes, or their zstd compression when asked and when it shrinks
    /// them. Done outside the cache's locks.
    struct Payload {
        var plain: ByteBuffer?
        var compressed: [UInt8]
        var length: Int

        var storedCount: Int { plain?.readableBytes ?? compressed.count }
    }

    static func prepare(_ bytes: ByteBuffer, residency: Residency) -> Payload {
        if case .zstd(let level) = residency, bytes.readableBytes > 0 {
            var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.readableBytes))
            let n = out.withUnsafeMutableBytes { o in
                bytes.withUnsafeReadableBytes { Zstd.compress($0, into: o, level: level) }
            }
            if let n, n < bytes.readableBytes {
                out.removeLast(out.count - n)
                return Payload(plain: nil, compressed: out, length: bytes.readableBytes)
            }
        }
        // A buffer of exactly the block's bytes: a slice of a larger buffer (a network read) would keep all of
        // that buffer alive, outside the budget. A buffer that is all of its storage is kept as it is.
        if bytes.storageCapacity == bytes.readableBytes {
            return Payload(plain: bytes, compressed: [], length: bytes.readableBytes)
        }
        var own = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
        own.writeImmutableBuffer(bytes)
        return Payload(plain: own, compressed: [], length: bytes.readableBytes)
    }

    /// Takes `payload` into the arena's budget; nil when the budget is exhausted.
    static func make(_ payload: Payload, arena: BlockArena) -> BlockStorage? {
        if let plain = payload.plain {
            guard arena.reserve(plain.readableBytes) else { return nil }
            return BlockStorage(
                arena: arena, content: .plain(plain), length: payload.length, storedCount: plain.readableBytes)
        }
        guard let memory = arena.allocate(payload.compressed.count) else { return nil }
        payload.compressed.withUnsafeBytes { memory.copyMemory(from: $0) }
        return BlockStorage(
            arena: arena, content: .compressed(memory), length: payload.length, storedCount: memory.count)
    }

    /// The block's bytes as a buffer: the stored one itself when plain, else decompressed.
    func buffer() throws(EddyError) -> ByteBuffer {
        switch content {
        case .plain(let buffer):
            return buffer
        case .compressed(let memory):
            var out = ByteBufferAllocator().buffer(capacity: length)
            let n = out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { o in
                let n = ZSTD_decompress(o.baseAddress, length, UnsafeRawPointer(memory.baseAddress), memory.count)
                return ZSTD_isError(n) == 0 ? n : 0
            }
            guard n == length else { throw EddyError(.corruptData, "a cached block failed to decompress") }
            return out
        }
    }

    /// The block's bytes as an array (a copy).
    func bytes() throws(EddyError) -> [UInt8] {
        let b = try buffer()
        return Array(b.readableBytesView)
    }
}
