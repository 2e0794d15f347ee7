import StreamModel

/// ByteWriter appends big-endian integers and length-prefixed fields to a byte array: the encoding of
/// journal records and checkpoints.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func bool(_ v: Bool) { u8(v ? 1 : 0) }

    /// A string as u16 length + UTF-8.
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u16(UInt16(clamping: utf8.count))
        bytes.append(contentsOf: utf8.prefix(Int(UInt16.max)))
    }

    /// A byte array as u32 length + bytes.
    mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func stream(_ name: StreamName) {
        string(name.scope)
        string(name.stream)
    }

    mutating func segment(_ id: SegmentID) {
        stream(id.stream)
        u32(id.number)
    }

    /// Overwrites 4 bytes at `offset` with `v`.
    mutating func patchU32(_ v: UInt32, at offset: Int) {
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self) }
    }
}

/// ByteReader reads what ``ByteWriter`` wrote; every read past the end throws ``ByteReader/Short``.
struct ByteReader {
    struct Short: Error {}

    let bytes: UnsafeRawBufferPointer
    var position: Int

    init(_ bytes: UnsafeRawBufferPointer, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var remaining: Int { bytes.count - position }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(Short) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw Short() }
        defer { position += size }
        return T(bigEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }

    mutating func u8() throws(Short) -> UInt8 { try integer(UInt8.self) }
    mutating func u16() throws(Short) -> UInt16 { try integer(UInt16.self) }
    mutating func u32() throws(Short) -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws(Short) -> UInt64 { try integer(UInt64.self) }
    mutating func i64() throws(Short) -> Int64 { Int64(bitPattern: try integer(UInt64.self)) }
    mutating func bool() throws(Short) -> Bool { try u8() != 0 }

    mutating func raw(_ count: Int) throws(Short) -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw Short() }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    mutating func string() throws(Short) -> String {
        let n = Int(try u16())
        return String(decoding: try raw(n), as: UTF8.self)
    }

    mutating func blob() throws(Short) -> [UInt8] {
        let n = Int(try u32())
        return Array(try raw(n))
    }
}

extension ByteReader {
    /// Reads a stream name and validates it: a name that fails validation on disk is corruption.
    mutating func stream() throws(EddyError) -> StreamName {
        do {
            let scope = try string()
            let stream = try string()
            return try StreamName(scope: scope, stream: stream)
        } catch let e as EddyError {
            throw e
        } catch {
            throw EddyError(.corruptData, "record ends inside a stream name")
        }
    }

    mutating func segment() throws(EddyError) -> SegmentID {
        let name = try stream()
        do {
            return SegmentID(stream: name, number: try u32())
        } catch {
            throw EddyError(.corruptData, "record ends inside a segment id")
        }
    }
}
