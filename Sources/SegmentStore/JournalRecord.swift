import StreamModel

/// An append as the journal holds it: the batch's frames and where they go.
struct AppendRecord: Hashable {
    var segment: SegmentID
    /// Where the first frame lands; set by ``Catalog/prepare(_:)`` from the segment's length.
    var offset: UInt64
    /// The writer's ID, or empty for an append without deduplication.
    var writerID: String
    /// The event number of the batch's first event; the batch numbers its events consecutively.
    var firstEventNumber: Int64
    /// The framed events, validated.
    var frames: [UInt8]
    /// The size of each frame in `frames`, in order.
    var frameSizes: [Int]
}

/// One journal record. The byte layout (docs/architecture.md, "Journal"):
/// `u32 body length | u32 CRC32C of body | body`, where body is `u64 LSN | u8 type | fields`.
enum JournalRecord: Hashable {
    case createStream(StreamName, segments: UInt32)
    case deleteStream(StreamName)
    case append(AppendRecord)
    case seal(SegmentID)
    case truncate(SegmentID, offset: UInt64)

    /// Size of the length and CRC fields before the body.
    static let prefixSize = 8

    /// Appends the record with sequence number `lsn` to `out`.
    func encode(lsn: UInt64, into out: inout ByteWriter) {
        let start = out.bytes.count
        out.u32(0)
        out.u32(0)
        out.u64(lsn)
        switch self {
        case .createStream(let name, let count):
            out.u8(1)
            out.stream(name)
            out.u32(count)
        case .deleteStream(let name):
            out.u8(2)
            out.stream(name)
        case .append(let a):
            out.u8(3)
            out.segment(a.segment)
            out.u64(a.offset)
            out.string(a.writerID)
            out.i64(a.firstEventNumber)
            out.blob(a.frames)
        case .seal(let id):
            out.u8(4)
            out.segment(id)
        case .truncate(let id, let offset):
            out.u8(5)
            out.segment(id)
            out.u64(offset)
        }
        let bodyLength = out.bytes.count - start - Self.prefixSize
        let crc = out.bytes.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + Self.prefixSize)...]))
        }
        out.patchU32(UInt32(bodyLength), at: start)
        out.patchU32(crc, at: start + 4)
    }

    /// What ``decode(_:at:)`` found.
    enum Decoded {
        case record(JournalRecord, lsn: UInt64, size: Int)
        /// The bytes end inside the record.
        case incomplete
        /// The record's length or CRC is wrong, or its body does not parse.
        case corrupt(String)
    }

    /// Decodes the record at `offset`.
    static func decode(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Decoded {
        let available = bytes.count - offset
        guard available >= prefixSize else { return .incomplete }
        var header = ByteReader(bytes, position: offset)
        guard let bodyLength = try? header.u32(), let storedCRC = try? header.u32() else { return .incomplete }
        guard bodyLength >= 9, bodyLength <= UInt32(Int32.max) else {
            return .corrupt("record length \(bodyLength) is impossible")
        }
        guard available - prefixSize >= Int(bodyLength) else { return .incomplete }
        let body = UnsafeRawBufferPointer(
            rebasing: bytes[(offset + prefixSize)..<(offset + prefixSize + Int(bodyLength))])
        let crc = CRC32C.checksum(body)
        guard crc == storedCRC else { return .corrupt("record CRC32C mismatch") }
        var r = ByteReader(body)
        do {
            let lsn = try r.u64()
            let type = try r.u8()
            let record: JournalRecord
            switch type {
            case 1:
                let name = try r.stream()
                record = .createStream(name, segments: try r.u32())
            case 2:
                record = .deleteStream(try r.stream())
            case 3:
                let segment = try r.segment()
                let offset = try r.u64()
                let writer = try r.string()
                let first = try r.i64()
                let frames = try r.blob()
                let sizes = try frames.withBytes { (b) throws(EddyError) in try EventFrame.frameSizes(b) }
                record = .append(
                    AppendRecord(
                        segment: segment, offset: offset, writerID: writer, firstEventNumber: first, frames: frames,
                        frameSizes: sizes))
            case 4:
                record = .seal(try r.segment())
            case 5:
                let segment = try r.segment()
                record = .truncate(segment, offset: try r.u64())
            default:
                return .corrupt("unknown record type \(type)")
            }
            guard r.remaining == 0 else { return .corrupt("record has \(r.remaining) trailing bytes") }
            return .record(record, lsn: lsn, size: prefixSize + Int(bodyLength))
        } catch let e as EddyError {
            return .corrupt(e.message)
        } catch {
            return .corrupt("record body is cut short")
        }
    }
}
