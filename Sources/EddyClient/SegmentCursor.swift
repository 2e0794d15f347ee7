import NIOCore
import StreamModel

/// An event read from a stream, with its pointer (a reader resumes right after it).
public struct PointedEvent: Sendable {
    /// The event.
    public var event: Event
    /// Where it is.
    public var pointer: EventPointer

    /// An event and its pointer.
    public init(event: Event, pointer: EventPointer) {
        self.event = event
        self.pointer = pointer
    }
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
        let base = pendingOffset
        let segment = self.segment
        let cut: Cut
        if pending.isEmpty {
            // The usual case: the bytes start at an event boundary. They are cut where they are; only an
            // incomplete last event is kept for the next fetch.
            cut = data.withUnsafeReadableBytes { Self.cut($0, segment: segment, base: base) }
            if let failure = cut.failure {
                pending = Array(data.readableBytesView)  // as the other way leaves it: every byte from the boundary
                throw failure
            }
            if cut.used < data.readableBytes {
                pending = data.getBytes(at: data.readerIndex + cut.used, length: data.readableBytes - cut.used) ?? []
            }
        } else {
            pending.append(contentsOf: data.readableBytesView)
            cut = pending.withUnsafeBytes { Self.cut($0, segment: segment, base: base) }
            if let failure = cut.failure { throw failure }
            pending.removeFirst(cut.used)
        }
        pendingOffset += UInt64(cut.used)
        return cut.events
    }

    /// The whole events at the front of some bytes, how many bytes they take, and the error of a bad one after them.
    private struct Cut {
        var events: [PointedEvent] = []
        var used = 0
        var failure: EddyError?
    }

    /// Cuts `b` (bytes of `segment` from `base`, an event boundary) into whole events, each checked once.
    private static func cut(_ b: UnsafeRawBufferPointer, segment: SegmentID, base: UInt64) -> Cut {
        var cut = Cut()
        while cut.used < b.count {
            switch EventFrame.check(b, at: cut.used) {
            case .frame(let size):
                cut.events.append(
                    PointedEvent(
                        event: EventFrame.decode(checked: b, at: cut.used, size: size),
                        pointer: EventPointer(segment: segment, offset: base + UInt64(cut.used), length: UInt32(size))))
                cut.used += size
            case .incomplete:
                return cut
            case .corrupt(let why):
                cut.failure = EddyError(
                    .corruptData, "bad event in \(segment) at offset \(base + UInt64(cut.used)): \(why)")
                return cut
            }
        }
        return cut
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

extension EddyClient {
    /// One cursor per segment of `info`'s stream: each at its segment's start when `positions` is empty, else one
    /// per position, for the segments they name only. A position is an event pointer (the cursor starts right
    /// after that event; a pointer without its `+LENGTH` has the event's size read from the segment), or a
    /// pointer ending in `+0`: the cursor starts at that offset. A pointer's event is read (its length field),
    /// so a pointer whose size disagrees with the event there is refused.
    /// - Throws: ``EddyError/Code/invalidArgument`` for a position that is not a pointer of this stream, names a
    ///   segment twice, or points where no such event is; ``EddyError/Code/offsetOutOfRange`` past the end.
    public func cursors(_ info: StreamInfo, at positions: [String]) async throws(EddyError) -> [SegmentCursor] {
        if positions.isEmpty {
            return info.segments.map { SegmentCursor(segment: $0.segment, offset: $0.startOffset) }
        }
        var cursors: [SegmentCursor] = []
        for text in positions {
            let pointer = try EventPointer(parsing: text)
            guard pointer.segment.stream == info.name, Int(pointer.segment.number) < info.segments.count else {
                throw EddyError(.invalidArgument, "pointer \(text) does not name a segment of \(info.name)")
            }
            guard !cursors.contains(where: { $0.segment == pointer.segment }) else {
                throw EddyError(.invalidArgument, "two positions name segment \(pointer.segment)")
            }
            if text.hasSuffix("+0") {
                let segment = info.segments[Int(pointer.segment.number)]
                guard pointer.offset <= segment.length else {
                    throw EddyError(
                        .offsetOutOfRange, "position \(text) is past the end of \(pointer.segment) (\(segment.length))")
                }
                cursors.append(SegmentCursor(segment: pointer.segment, offset: pointer.offset))
                continue
            }
            // The event's frame length field: its size, and a check that an event starts there.
            let (_, head) = try await read(pointer.segment, from: pointer.offset, maxBytes: 4)
            guard let bodyLength = head.getInteger(at: head.readerIndex, as: UInt32.self) else {
                throw EddyError(.invalidArgument, "no event at \(text)")
            }
            let length = 4 + UInt64(bodyLength)
            guard pointer.length == 0 || UInt64(pointer.length) == length else {
                throw EddyError(
                    .invalidArgument, "no event of \(pointer.length) bytes at \(text) (the one there has \(length))")
            }
            cursors.append(SegmentCursor(segment: pointer.segment, offset: pointer.offset + length))
        }
        return cursors
    }
}
