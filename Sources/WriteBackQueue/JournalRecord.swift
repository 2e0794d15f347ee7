/// JournalRecord is one change of the broker's state, as the journal keeps it. Replaying the records of a
/// journal in order rebuilds the broker: messages, attempts, dead letters and the next message ID. Leases are
/// not rebuilt (their consumers died with the process): every message leased at a crash is delivered again.
///
/// Each record is the payload of one event of the journal stream (so it has the event frame's CRC32C). Its
/// encoding, all integers big-endian: a type byte, then the fields of the case in order; strings and byte
/// strings are a UInt32 length and the bytes. docs/protocol.md lists the types.
public enum JournalRecord: Sendable, Hashable {
    /// A message and its whole state (enqueue, and every message of a snapshot). `availableAt` is when it may be
    /// delivered (ms since 1970); `deadAt` is non-zero for a dead letter.
    case put(QueueMessage, availableAt: Int64, deadAt: Int64)
    /// A delivery (a lease was granted); informational on replay except for the delivery count.
    case lease(MessageID)
    /// The message is done and removed.
    case ack(MessageID)
    /// A failed attempt: the new attempt count, when it may be tried again, the error.
    case nack(MessageID, attempts: Int, availableAt: Int64, error: String)
    /// A lease expired (the consumer died or overran); the message is ready again.
    case expire(MessageID)
    /// The message moved to its queue's dead-letter queue, at `at`, for `reason`.
    case dead(MessageID, at: Int64, reason: String)
    /// A dead letter went back to its queue with a fresh attempt count.
    case redrive(MessageID, availableAt: Int64)
    /// A dead letter (or message) was deleted.
    case purge(MessageID)
    /// A snapshot starts: the state is replaced by the `put` records up to ``snapshotEnd``. `nextID` is the
    /// broker's next message ID.
    case snapshotBegin(nextID: MessageID)
    /// The snapshot is complete. A snapshot without its end (a crash while writing it) is ignored.
    case snapshotEnd

    var type: UInt8 {
        switch self {
        case .put: 1
        case .lease: 2
        case .ack: 3
        case .nack: 4
        case .expire: 5
        case .dead: 6
        case .redrive: 7
        case .purge: 8
        case .snapshotBegin: 9
        case .snapshotEnd: 10
        }
    }

    /// The record's bytes.
    public func encoded() -> [UInt8] {
        var out = JournalWriter()
        out.u8(type)
        switch self {
        case .put(let m, let availableAt, let deadAt):
            out.u64(m.id)
            out.string(m.queue)
            out.u8(m.qos.rawValue)
            out.bytes(m.payload)
            out.u32(UInt32(m.attributes.count))
            for key in m.attributes.keys.sorted() {
                out.string(key)
                out.string(m.attributes[key]!)
            }
            out.u64(UInt64(m.cost))
            out.i64(m.enqueuedAt)
            out.u32(UInt32(clamping: m.attempts))
            out.u32(UInt32(clamping: m.expiries))
            out.u32(UInt32(clamping: m.deliveries))
            out.string(m.lastError)
            out.i64(availableAt)
            out.i64(deadAt)
        case .lease(let id), .ack(let id), .expire(let id), .purge(let id):
            out.u64(id)
        case .nack(let id, let attempts, let availableAt, let error):
            out.u64(id)
            out.u32(UInt32(clamping: attempts))
            out.i64(availableAt)
            out.string(error)
        case .dead(let id, let at, let reason):
            out.u64(id)
            out.i64(at)
            out.string(reason)
        case .redrive(let id, let availableAt):
            out.u64(id)
            out.i64(availableAt)
        case .snapshotBegin(let next):
            out.u64(next)
        case .snapshotEnd:
            break
        }
        return out.bytes
    }

    /// Decodes a record.
    /// - Throws: a description of what is wrong (the caller adds the offset).
    public static func decode(_ bytes: [UInt8]) throws(JournalDecodeError) -> JournalRecord {
        var r = JournalReader(data: bytes)
        let type = try r.u8()
        let record: JournalRecord
        switch type {
        case 1:
            let id = try r.u64()
            let queue = try r.string()
            guard let qos = QoSClass(rawValue: try r.u8()) else { throw JournalDecodeError("unknown QoS class") }
            let payload = try r.bytes()
            var attributes: [String: String] = [:]
            let count = try r.u32()
            guard count <= 10_000 else { throw JournalDecodeError("\(count) attributes") }
            for _ in 0..<count { attributes[try r.string()] = try r.string() }
            let cost = Int(clamping: try r.u64())
            let enqueuedAt = try r.i64()
            let attempts = Int(try r.u32())
            let expiries = Int(try r.u32())
            let deliveries = Int(try r.u32())
            let lastError = try r.string()
            let message = QueueMessage(
                id: id, queue: queue, qos: qos, payload: payload, attributes: attributes, cost: cost,
                enqueuedAt: enqueuedAt, attempts: attempts, expiries: expiries, deliveries: deliveries,
                lastError: lastError)
            record = .put(message, availableAt: try r.i64(), deadAt: try r.i64())
        case 2: record = .lease(try r.u64())
        case 3: record = .ack(try r.u64())
        case 4: record = .nack(try r.u64(), attempts: Int(try r.u32()), availableAt: try r.i64(), error: try r.string())
        case 5: record = .expire(try r.u64())
        case 6: record = .dead(try r.u64(), at: try r.i64(), reason: try r.string())
        case 7: record = .redrive(try r.u64(), availableAt: try r.i64())
        case 8: record = .purge(try r.u64())
        case 9: record = .snapshotBegin(nextID: try r.u64())
        case 10: record = .snapshotEnd
        default: throw JournalDecodeError("unknown record type \(type)")
        }
        guard r.offset == bytes.count else { throw JournalDecodeError("\(bytes.count - r.offset) stray bytes") }
        return record
    }
}

/// Why a journal record did not decode.
public struct JournalDecodeError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

struct JournalWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func bytes(_ v: [UInt8]) {
        u32(UInt32(v.count))
        self.bytes += v
    }
    mutating func string(_ v: String) { bytes(Array(v.utf8)) }
}

struct JournalReader {
    let data: [UInt8]
    var offset = 0

    mutating func take(_ n: Int) throws(JournalDecodeError) -> ArraySlice<UInt8> {
        guard n >= 0, data.count - offset >= n else { throw JournalDecodeError("record ends early") }
        defer { offset += n }
        return data[offset..<offset + n]
    }
    mutating func u8() throws(JournalDecodeError) -> UInt8 { try take(1).first! }
    mutating func u32() throws(JournalDecodeError) -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws(JournalDecodeError) -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func i64() throws(JournalDecodeError) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func bytes() throws(JournalDecodeError) -> [UInt8] {
        let count = Int(try u32())
        return Array(try take(count))
    }
    mutating func string() throws(JournalDecodeError) -> String {
        let raw = try bytes()
        guard let text = String(validating: raw, as: UTF8.self) else { throw JournalDecodeError("invalid UTF-8") }
        return text
    }
}
