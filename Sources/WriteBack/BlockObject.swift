import CZstd
import CacheCore
import NIOCore
import ObjectStorage
import StreamModel

/// BlockObject is the format of a flushed range of a segment in object storage (docs/protocol.md, "Block
/// objects"): a 44-byte header and the bytes, zstd-compressed when that shrinks them.
///
/// Header, integers big-endian: magic `EDDYBLK1` (8 bytes); version (UInt16, 1); codec (UInt8: 0 none,
/// 1 zstd); flags (UInt8, 0); segment number (UInt32); start offset (UInt64); end offset (UInt64); stored
/// length (UInt32, the bytes after the header); CRC32C of the uncompressed bytes (UInt32); CRC32C of the 40
/// header bytes before it (UInt32). Offsets are the segment's own, so an object names the exact range it holds.
///
/// Objects live at `<prefix>/<scope>/<stream>/<segment:08>/<start:020>.blk`: fixed width and fixed depth, so
/// a listing of one segment's folder is in offset order on every S3 server.
public struct BlockObject: Sendable, Hashable {
    /// The segment number.
    public var segment: UInt32
    /// The first offset held.
    public var start: UInt64
    /// One past the last offset held.
    public var end: UInt64
    /// The bytes [start, end).
    public var bytes: ByteBuffer

    package static let magic = Array("EDDYBLK1".utf8)
    package static let headerSize = 44

    /// Creates an object for `bytes` at `start` of segment `segment`.
    public init(segment: UInt32, start: UInt64, bytes: ByteBuffer) {
        self.segment = segment
        self.start = start
        self.end = start + UInt64(bytes.readableBytes)
        self.bytes = bytes
    }

    /// The object's key.
    public static func key(prefix: String, segment: SegmentID, start: UInt64) -> String {
        ObjectKey.join(segmentFolder(prefix: prefix, segment: segment), ObjectKey.fixedWidth(start, 20) + ".blk")
    }

    /// The folder of a segment's objects (ending in `/`), for listings.
    public static func segmentFolder(prefix: String, segment: SegmentID) -> String {
        ObjectKey.join(
            prefix, "\(segment.stream.scope)/\(segment.stream.stream)/\(ObjectKey.fixedWidth(segment.number, 8))/")
    }

    /// The start offset a block key names, or nil when the key is not a block object's.
    public static func start(ofKey key: String) -> UInt64? {
        guard key.hasSuffix(".blk"), let slash = key.lastIndex(of: "/") else { return nil }
        let digits = key[key.index(after: slash)...].dropLast(4)
        guard digits.count == 20 else { return nil }
        return UInt64(digits)
    }

    /// The encoded object: header and (compressed) bytes.
    /// - Parameter level: the zstd level; the bytes are stored plain when compression does not shrink them.
    ///
    /// zstd writes straight into the object's buffer after room for the header, so the bytes are copied once
    /// (compressed) or twice (plain, when compression did not pay).
    public func encoded(level: Int32 = 1) -> ByteBuffer {
        let crc = bytes.withUnsafeReadableBytes { CRC32C.checksum($0) }
        let length = bytes.readableBytes
        var buffer = ByteBufferAllocator().buffer(capacity: Self.headerSize + ZSTD_compressBound(length))
        buffer.moveWriterIndex(forwardBy: Self.headerSize)
        var codec: UInt8 = 0
        if length > 0 {
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { out in
                let n = bytes.withUnsafeReadableBytes { Zstd.compress($0, into: out, level: level) }
                return n.map { $0 < length ? $0 : 0 } ?? 0
            }
            if n > 0 { codec = 1 }
        }
        if codec == 0 { buffer.writeImmutableBuffer(bytes) }
        let stored = UInt32(buffer.writerIndex - Self.headerSize)
        var at = 0
        func put<T: FixedWidthInteger>(_ value: T) { at += buffer.setInteger(value, at: at) }
        at += buffer.setBytes(Self.magic, at: 0)
        put(UInt16(1))
        put(codec)
        put(UInt8(0))
        put(segment)
        put(start)
        put(end)
        put(stored)
        put(crc)
        let headerCRC = buffer.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<at])) }
        put(headerCRC)
        return buffer
    }

    /// What ``create(in:key:level:)`` found.
    public enum CreateOutcome: Sendable {
        /// The object was written.
        case written
        /// The key held these very bytes already (an earlier attempt's).
        case alreadyPresent
        /// The key holds another object (another range from the same start): the caller compares it with its
        /// source and adopts it or refuses.
        case differs(BlockObject)
    }

    /// Writes the object create-only under `key`.
    /// - Throws: the store's error; ``EddyError/Code/corruptData`` when what is there is not a block object.
    public func create(in store: any ObjectStore, key: String, level: Int32 = 1) async throws -> CreateOutcome {
        do {
            return try await store.put(key, body: encoded(level: level), mode: .createOnly) == .written
                ? .written : .alreadyPresent
        } catch ObjectStoreError.alreadyExists(_) {
            return .differs(try BlockObject.decode(try await store.get(key), key: key))
        }
    }

    /// Decodes and checks an object.
    /// - Parameter key: the object's key, for messages.
    /// - Throws: ``EddyError/Code/corruptData`` naming the key and what failed (magic, header checksum,
    ///   length, decompression, data checksum).
    public static func decode(_ object: ByteBuffer, key: String) throws(EddyError) -> BlockObject {
        var b = object
        func corrupt(_ why: String) -> EddyError { EddyError(.corruptData, "block object \(key): \(why)") }
        guard b.readableBytes >= headerSize, b.readBytes(length: 8) == magic else {
            throw corrupt("not a block object")
        }
        let headerCRC = object.getInteger(at: object.readerIndex + 40, as: UInt32.self)!
        let computed = object.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<40])) }
        guard headerCRC == computed else { throw corrupt("header checksum mismatch") }
        let version = b.readInteger(as: UInt16.self)!
        guard version == 1 else { throw corrupt("unknown version \(version)") }
        let codec = b.readInteger(as: UInt8.self)!
        _ = b.readInteger(as: UInt8.self)
        let segment = b.readInteger(as: UInt32.self)!
        let start = b.readInteger(as: UInt64.self)!
        let end = b.readInteger(as: UInt64.self)!
        let stored = Int(b.readInteger(as: UInt32.self)!)
        let crc = b.readInteger(as: UInt32.self)!
        _ = b.readInteger(as: UInt32.self)
        guard end >= start, end - start <= 64 << 20 else { throw corrupt("impossible range \(start)..<\(end)") }
        guard b.readableBytes == stored else {
            throw corrupt("\(b.readableBytes) bytes after the header, \(stored) expected")
        }
        let length = Int(end - start)
        var bytes: ByteBuffer
        switch codec {
        case 0:
            guard stored == length else { throw corrupt("plain length \(stored) is not \(length)") }
            bytes = b
        case 1:
            var out = ByteBufferAllocator().buffer(capacity: length)
            let n = out.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { o in
                b.withUnsafeReadableBytes { src in
                    let n = ZSTD_decompress(o.baseAddress, length, src.baseAddress, src.count)
                    return ZSTD_isError(n) == 0 ? n : 0
                }
            }
            guard n == length else { throw corrupt("zstd did not give \(length) bytes") }
            bytes = out
        default:
            throw corrupt("unknown codec \(codec)")
        }
        guard bytes.withUnsafeReadableBytes({ CRC32C.checksum($0) }) == crc else {
            throw corrupt("data checksum mismatch")
        }
        var result = BlockObject(segment: segment, start: start, bytes: bytes)
        result.end = end
        return result
    }
}
