import NIOConcurrencyHelpers
import NIOCore
import StoreClient
import StreamModel
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// JournalLog is where the broker's journal lives: an append-only log of records with offsets, that can drop
/// its head. ``StoreJournalLog`` keeps it as a stream of the bundled segment store (durable, ordered,
/// group-committed, recovered after a crash, and readable by the node that inherits a dead node's segments);
/// ``MemoryJournalLog`` is the in-memory fake for tests of the broker above it.
///
/// Records travel as event frames (so each has a CRC32C); a frame that fails its check stops replay with
/// ``QueueError/corruptJournal(offset:reason:)``.
public protocol JournalLog: Sendable {
    /// The readable range: the first offset (after truncations) and the end.
    func bounds() async throws -> (start: UInt64, end: UInt64)
    /// Appends records as one durable batch; returns the offsets where it starts and ends.
    func append(_ records: [[UInt8]]) async throws -> (start: UInt64, end: UInt64)
    /// The frames from `offset` on, at most about `maxBytes`, whole frames only (may be empty at the end).
    func read(from offset: UInt64, maxBytes: Int) async throws -> ByteBuffer
    /// Drops everything before `offset` (a frame boundary).
    func truncate(before offset: UInt64) async throws
    /// What the journal is, for error messages (`stream _eddy/queue-...`).
    var name: String { get }
}

extension JournalLog {
    /// The journal's type, when it says nothing better.
    public var name: String { "\(Self.self)" }
}

/// JournalFrames turns records into event frames and back.
public enum JournalFrames {
    /// The event frames of `records`, concatenated.
    public static func encode(_ records: [[UInt8]], timestamp: Int64) -> ByteBuffer {
        var out: [UInt8] = []
        for record in records {
            // Records are far below the frame limit (payloads are capped), so encoding cannot fail.
            try? EventFrame.encode(Event(timestamp: timestamp, payload: record), into: &out)
        }
        return ByteBuffer(bytes: out)
    }

    /// The records in `bytes`, which start at journal offset `base`, with the offset of each.
    /// - Throws: ``QueueError/corruptJournal(offset:reason:)`` at the first frame that is cut short or fails
    ///   its CRC, or whose record does not decode.
    ///   `journal` names the journal in the error's reason (empty: not named).
    public static func decode(_ bytes: ByteBuffer, base: UInt64, journal: String = "") throws(QueueError) -> [(
        offset: UInt64, record: JournalRecord
    )] {
        var result: [(UInt64, JournalRecord)] = []
        let outcome: QueueError? = bytes.withUnsafeReadableBytes { raw in
            var at = 0
            while at < raw.count {
                switch EventFrame.check(raw, at: at) {
                case .incomplete:
                    return .corruptJournal(offset: base + UInt64(at), reason: "record frame cut short")
                case .corrupt(let why):
                    return .corruptJournal(offset: base + UInt64(at), reason: why)
                case .frame(let size):
                    guard let (event, _) = try? EventFrame.decode(raw, at: at) else {
                        return .corruptJournal(offset: base + UInt64(at), reason: "undecodable frame")
                    }
                    do throws(JournalDecodeError) {
                        result.append((base + UInt64(at), try JournalRecord.decode(event.payload)))
                    } catch {
                        return .corruptJournal(offset: base + UInt64(at), reason: error.description)
                    }
                    at += size
                }
            }
            return nil
        }
        if case .corruptJournal(let offset, let reason)? = outcome, !journal.isEmpty {
            throw QueueError.corruptJournal(offset: offset, reason: "\(journal): \(reason)")
        }
        if let outcome { throw outcome }
        return result
    }
}

/// MemoryJournalLog keeps the journal in memory: for unit tests of the broker, and for corrupting a journal
/// on purpose (``bytes`` is writable).
public final class MemoryJournalLog: JournalLog, @unchecked Sendable {
    let lock = NIOLock()
    var start: UInt64 = 0
    var storage: [UInt8] = []

    /// An empty journal.
    public init() {}

    /// The journal's bytes from its start offset on (tests flip and cut them).
    public var bytes: [UInt8] {
        get { lock.withLock { storage } }
        set { lock.withLock { storage = newValue } }
    }

    public func bounds() async throws -> (start: UInt64, end: UInt64) {
        lock.withLock { (start, start + UInt64(storage.count)) }
    }

    public func append(_ records: [[UInt8]]) async throws -> (start: UInt64, end: UInt64) {
        let frames = JournalFrames.encode(records, timestamp: 0)
        return lock.withLock {
            let first = start + UInt64(storage.count)
            storage += frames.readableBytesView
            return (first, start + UInt64(storage.count))
        }
    }

    public func read(from offset: UInt64, maxBytes: Int) async throws -> ByteBuffer {
        lock.withLock {
            guard offset >= start, offset <= start + UInt64(storage.count) else { return ByteBuffer() }
            let from = Int(offset - start)
            // Whole frames only, as a store read would give; past a bad frame, everything that is left.
            var end = from
            storage.withUnsafeBytes { raw in
                while end < raw.count, end - from < maxBytes, case .frame(let size) = EventFrame.check(raw, at: end) {
                    end += size
                }
                if end == from { end = raw.count }
            }
            return ByteBuffer(bytes: storage[from..<end])
        }
    }

    public func truncate(before offset: UInt64) async throws {
        lock.withLock {
            let drop = Int(min(max(offset, start), start + UInt64(storage.count)) - start)
            storage.removeFirst(drop)
            start += UInt64(drop)
        }
    }
}

/// StoreJournalLog keeps the journal in segment 0 of a stream of the segment store, through a ``StoreClient``:
/// appends are the store's durable, exactly-once appends (writer ID `queue-journal` and consecutive event
/// numbers; a batch that failed is sent again with the same numbers, so the store never writes it twice), reads
/// are plain reads, and compaction truncates the segment. A broken connection is replaced on the next call.
public final class StoreJournalLog: JournalLog, @unchecked Sendable {
    /// `stream SCOPE/STREAM`.
    public var name: String { "stream \(stream)" }
    /// The stream holding the journal.
    public let stream: StreamName
    let connect: @Sendable () async throws -> StoreClient
    let lock = NIOLock()
    var client: StoreClient?
    var nextEventNumber: Int64 = 0
    /// The batch whose append failed, with the event numbers it was given: sent again as it was.
    var unacknowledged: (first: Int64, records: [[UInt8]])?
    static let writerID = "queue-journal"

    var segment: SegmentID { SegmentID(stream: stream, number: 0) }

    /// Opens (creating if needed) the journal stream.
    /// - Parameters:
    ///   - stream: the journal's stream (one per broker).
    ///   - connect: makes a connection to the store (called again after a connection breaks).
    /// - Throws: ``QueueError/journal(_:)`` when the store cannot be reached or refuses.
    public init(stream: StreamName, connect: @escaping @Sendable () async throws -> StoreClient) async throws {
        self.stream = stream
        self.connect = connect
        do {
            _ = try await send(.createStream(stream, segments: 1))
        } catch QueueError.journal(let message) where message.contains("exists") {
            // Reopening an existing journal.
        }
        if case .writerState(let last) = try await send(.writerState(segment, writerID: Self.writerID)) {
            nextEventNumber = (last ?? -1) + 1
        }
    }

    func send(_ request: Request) async throws -> Response {
        let current = lock.withLock { client }
        let connection: StoreClient
        if let current {
            connection = current
        } else {
            do {
                connection = try await connect()
            } catch {
                throw QueueError.journal("\(stream): cannot connect to the store: \(error)")
            }
            lock.withLock { client = connection }
        }
        do {
            return try await connection.send(request, timeout: .seconds(30))
        } catch {
            if error.code == .connectionFailed || error.code == .timedOut || error.code == .shuttingDown {
                lock.withLock { if client === connection { client = nil } }
                await connection.close()
            }
            throw QueueError.journal("\(stream): \(error.message)")
        }
    }

    public func bounds() async throws -> (start: UInt64, end: UInt64) {
        guard case .segmentInfo(let info) = try await send(.segmentInfo(segment)) else {
            throw QueueError.journal("unexpected answer to segmentInfo")
        }
        return (info.startOffset, info.length)
    }

    public func append(_ records: [[UInt8]]) async throws -> (start: UInt64, end: UInt64) {
        let first: Int64 = lock.withLock {
            if let pending = unacknowledged {
                precondition(pending.records == records, "a failed journal batch must be retried unchanged")
                return pending.first
            }
            defer { nextEventNumber += Int64(records.count) }
            unacknowledged = (nextEventNumber, records)
            return nextEventNumber
        }
        let frames = JournalFrames.encode(records, timestamp: WallClock.milliseconds())
        let request = Request.append(segment: segment, writerID: Self.writerID, firstEventNumber: first, frames: frames)
        guard case .appendAck(let ack) = try await send(request) else {
            throw QueueError.journal("unexpected answer to append")
        }
        lock.withLock { unacknowledged = nil }
        return (ack.firstOffset, ack.firstOffset + UInt64(frames.readableBytes))
    }

    public func read(from offset: UInt64, maxBytes: Int) async throws -> ByteBuffer {
        let request = Request.read(segment: segment, offset: offset, maxBytes: UInt32(maxBytes), waitMilliseconds: 0)
        guard case .readResult(_, _, let data) = try await send(request) else {
            throw QueueError.journal("unexpected answer to read")
        }
        return data
    }

    public func truncate(before offset: UInt64) async throws {
        _ = try await send(.truncate(segment, offset: offset))
    }
}

/// Wall-clock milliseconds since 1970.
public enum WallClock {
    /// Now, in milliseconds since 1970.
    public static func milliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}
