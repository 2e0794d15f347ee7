import NIOCore
import StreamModel

/// An event read from a stream, with its pointer (a reader resumes right after it).
public struct PointedEvent: Sendable {
    /// The event.
    public var event: Event
    /// Where it is.
    public var pointer: EventPointer
}

/// SegmentCursor follows one segment: it fetches bytes, cuts them into whole events and hands them out in order.
/// Its position only moves past events it has handed out, so after a failover it resumes right after the last
/// delivered event: no gap, no duplicate.
public struct SegmentCursor: Sendable {
    /// The segment.
    public let segment: SegmentID
    /// The next byte to fetch.
    public private(set) var offset: UInt64
    /// Fetched bytes that do not make a whole event yet; they start at `pendingOffset`.
    private var pending: [UInt8] = []
    /// Where the next event starts: the position to resume from.
    public private(set) var pendingOffset: UInt64

    /// A cursor at `offset` (an event boundary).
    public init(segment: SegmentID, offset: UInt64) {
        self.segment = segment
        self.offset = offset
        self.pendingOffset = offset
    }

    /// Fetches once (waiting up to `wait` at the tail) and returns the whole events that arrived. After an error
    /// the cursor is still at the last delivered event.
    /// - Returns: the segment's state and the new events.
    public mutating func step(_ client: EddyClient, wait: Duration, maxBytes: Int = 1 << 20) async throws(EddyError)
        -> (info: SegmentInfo, events: [PointedEvent])
    {
        let info: SegmentInfo
        let data: ByteBuffer
        do {
            (info, data) = try await client.read(segment, from: offset, maxBytes: maxBytes, wait: wait)
        } catch {
            rewind()
            throw error
        }
        return (info, try take(data))
    }

    /// Drops a partial event (after a broken fetch): the next fetch starts again at the last event boundary.
    public mutating func rewind() {
        pending.removeAll()
        offset = pendingOffset
    }

    /// Takes fetched bytes, which start at ``offset``, and returns the whole events they complete.
    /// - Throws: ``EddyError/Code/corruptData`` for bytes that are not an event.
    public mutating func take(_ data: ByteBuffer) throws(EddyError) -> [PointedEvent] {
        offset += UInt64(data.readableBytes)
        pending.append(contentsOf: data.readableBytesView)
        var events: [PointedEvent] = []
        var at = 0
        let base = pendingOffset
        let segment = self.segment
        try pending.withBytes { (b) throws(EddyError) in
            while at < b.count {
                guard case .frame = EventFrame.check(b, at: at) else { break }
                let (event, size) = try EventFrame.decode(b, at: at)
                events.append(
                    PointedEvent(
                        event: event,
                        pointer: EventPointer(segment: segment, offset: base + UInt64(at), length: UInt32(size))))
                at += size
            }
            if at < b.count, case .corrupt(let why) = EventFrame.check(b, at: at) {
                throw EddyError(.corruptData, "bad event in \(segment) at offset \(base + UInt64(at)): \(why)")
            }
        }
        pending.removeFirst(at)
        pendingOffset += UInt64(at)
        return events
    }
}

extension EddyClient {
    /// The events of `cursors`' segments as one sequence: every event up to each segment's current end
    /// (`follow` false), or on and on as they arrive until every segment is sealed (`follow` true, by
    /// ``EddyClient/follow(_:heartbeat:_:)``: `poll` is its heartbeat). Segments are read concurrently; within a
    /// segment events come in order.
    public func events(_ cursors: [SegmentCursor], follow: Bool, poll: Duration = .seconds(30))
        -> AsyncThrowingStream<PointedEvent, any Error>
    {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for cursor in cursors {
                            group.addTask {
                                if follow {
                                    _ = try await self.follow(cursor, heartbeat: poll) { _, events in
                                        for e in events { continuation.yield(e) }
                                        return true
                                    }
                                    return
                                }
                                var cursor = cursor
                                let end = try await self.info(cursor.segment).length
                                while cursor.pendingOffset < end {
                                    let (info, events) = try await cursor.step(self, wait: .zero)
                                    for e in events { continuation.yield(e) }
                                    if events.isEmpty && cursor.offset >= info.length { return }
                                }
                            }
                        }
                        try await group.waitForAll()
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
