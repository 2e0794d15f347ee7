import CZstd
import StreamModel

/// How blocks are kept in memory.
public enum Residency: Sendable, Equatable {
    /// As they are.
    case plain
    /// zstd-compressed at `level`: more blocks per byte, some CPU per hit. Blocks that do not shrink are kept
    /// plain.
    case zstd(level: Int32)
}

/// BlockStorage owns one cached block's bytes in the arena; the memory goes back when the last reference does,
/// so a reader that took a block just before its eviction still reads valid bytes.
final class BlockStorage: Sendable {
    let arena: BlockArena
    nonisolated(unsafe) let buffer: UnsafeMutableRawBufferPointer
    /// The block's length before compression.
    let length: Int
    let compressed: Bool

    private init(arena: BlockArena, buffer: UnsafeMutableRawBufferPointer, length: Int, compressed: Bool) {
        self.arena = arena
        self.buffer = buffer
        self.length = length
        self.compressed = compressed
    }

    deinit { arena.free(buffer) }

    /// What a block will be stored as: its bytes, or their zstd compression when asked and when it shrinks
    /// them. Done outside the cache's locks.
    struct Payload {
        var bytes: [UInt8]
        var length: Int
        var compressed: Bool
    }

    static func prepare(_ bytes: [UInt8], residency: Residency) -> Payload {
        if case .zstd(let level) = residency, !bytes.isEmpty {
            var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
            let n = out.withUnsafeMutableBytes { o in
                bytes.withUnsafeBytes { ZSTD_compress(o.baseAddress, o.count, $0.baseAddress, $0.count, level) }
            }
            if ZSTD_isError(n) == 0 && n < bytes.count {
                out.removeLast(out.count - n)
                return Payload(bytes: out, length: bytes.count, compressed: true)
            }
        }
        return Payload(bytes: bytes, length: bytes.count, compressed: false)
    }

    /// Copies `payload` into the arena; nil when the arena's budget is exhausted.
    static func make(_ payload: Payload, arena: BlockArena) -> BlockStorage? {
        guard let buffer = arena.allocate(payload.bytes.count) else { return nil }
        payload.bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return BlockStorage(arena: arena, buffer: buffer, length: payload.length, compressed: payload.compressed)
    }

    /// The block's bytes, decompressed if needed.
    func bytes() throws(EddyError) -> [UInt8] {
        guard compressed else { return Array(UnsafeRawBufferPointer(buffer)) }
        var out = [UInt8](repeating: 0, count: length)
        let n = out.withUnsafeMutableBytes {
            ZSTD_decompress($0.baseAddress, $0.count, UnsafeRawPointer(buffer.baseAddress), buffer.count)
        }
        guard ZSTD_isError(n) == 0, n == length else {
            throw EddyError(.corruptData, "a cached block failed to decompress")
        }
        return out
    }
}
