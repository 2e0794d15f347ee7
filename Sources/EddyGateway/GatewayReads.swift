import EddyClient
import Hummingbird
import Logging
import NIOCore
import StreamModel
import Synchronization

/// The JSON lines of recent events, by pointer: readers of the same events (a thousand Server-Sent Events
/// clients of one tail) encode each once. The key is the pointer and the event's timestamp, so a stream deleted
/// and created again, whose new events sit at the old pointers, is not served the old lines.
final class RenderedEvents: Sendable {
    private struct Key: Hashable {
        var segment: SegmentID
        var offset: UInt64
        var length: UInt32
        var timestamp: Int64
    }
    /// An event's JSON line, its pointer as text, and its Server-Sent Event when the pointer is its id (a stream
    /// of one segment): `id: POINTER`, `data: JSON`, a blank line; one buffer every response writes as it is.
    struct Line: Sendable {
        var json: [UInt8]
        var pointer: String
        var frame: ByteBuffer

        init(json: [UInt8], pointer: String) {
            self.json = json
            self.pointer = pointer
            frame = ByteBuffer()
            frame.reserveCapacity(json.count + pointer.utf8.count + 14)
            frame.writeString("id: ")
            frame.writeString(pointer)
            frame.writeString("\ndata: ")
            frame.writeBytes(json)
            frame.writeString("\n\n")
        }
    }
    private struct State {
        var lines: [Key: Line] = [:]
        var order: [Key] = []
        var next = 0
    }
    private let state = Mutex(State())
    /// How many events are kept.
    let capacity: Int

    init(capacity: Int = 4096) { self.capacity = capacity }

    /// The JSON line of `e` (``PointedEvent/json()``) and its pointer's text, made once for all its readers.
    func line(_ e: PointedEvent) -> Line {
        let key = Key(
            segment: e.pointer.segment, offset: e.pointer.offset, length: e.pointer.length, timestamp: e.event.timestamp
        )
        if let line = state.withLock({ $0.lines[key] }) { return line }
        let line = Line(json: e.json(), pointer: e.pointer.description)
        state.withLock { s in
            if s.order.count < capacity {
                s.order.append(key)
            } else {
                s.lines[s.order[s.next]] = nil
                s.order[s.next] = key
                s.next = (s.next + 1) % capacity
            }
            s.lines[key] = line
        }
        return line
    }

    /// The JSON line of `e`.
    func json(_ e: PointedEvent) -> [UInt8] { line(e).json }
}

/// The reads of the gateway: NDJSON up to the tail, and Server-Sent Events that follow it.
enum GatewayReads {
    /// The event lines every response of the process shares.
    static let rendered = RenderedEvents()

    /// Where a read starts: `start` (each segment's first byte), `tail` (each segment's end now), or positions
    /// (``EddyClient/cursors(_:at:)``: event pointers, comma-separated, the segments they name only).
    static func cursors(_ from: String?, info: StreamInfo, client: EddyClient) async throws(EddyError)
        -> [SegmentCursor]
    {
        // A `+` left unescaped in a query string arrives as a space; pointers never hold one.
        let text = (from ?? "start").replacingOccurrences(of: " ", with: "+")
        switch text {
        case "", "start": return try await client.cursors(info, at: [])
        case "tail": return info.segments.map { SegmentCursor(segment: $0.segment, offset: $0.length) }
        default:
            return try await client.cursors(
                info, at: text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        }
    }

    /// The NDJSON body: every event of `cursors`' segments (segment by segment, in order) up to each segment's
    /// length in `info`, at most `limit` in all, written as it is read. A failure after the first line ends the
    /// body with an error line (`{"error", "message"}`).
    static func ndjson(_ cursors: [SegmentCursor], info: StreamInfo, limit: Int, lease: Lease, logger: Logger)
        -> ResponseBody
    {
        ResponseBody { writer in
            let client = lease.client
            var left = limit
            do {
                for var cursor in cursors where left > 0 {
                    guard let end = info.segments.first(where: { $0.segment == cursor.segment })?.length else {
                        continue
                    }
                    while cursor.pendingOffset < end && left > 0 {
                        let (segmentInfo, events) = try await cursor.step(client, wait: .zero)
                        var out = ByteBuffer()
                        for e in events.prefix(left) where e.pointer.offset < end {
                            out.writeBytes(rendered.json(e))
                            out.writeInteger(UInt8(ascii: "\n"))
                            left -= 1
                        }
                        if out.readableBytes > 0 { try await writer.write(out) }
                        if events.isEmpty && cursor.offset >= segmentInfo.length { break }
                    }
                }
            } catch let error as EddyError {
                logger.info("http read ended early", metadata: ["stream": "\(info.name)", "error": "\(error)"])
                try await writer.write(ByteBuffer(string: GatewayResponse.errorLine(error) + "\n"))
            }
            try await writer.finish(nil)
        }
    }

    /// What the readers of a Server-Sent Events response hand to its writer.
    enum Item: Sendable {
        case events(Int, [PointedEvent], bytes: Int)
        case ended(Int)
        case failed(EddyError)
        case overflow
        case keepAlive
        /// The gateway is closing: the response ends (the client reconnects elsewhere with `Last-Event-ID`).
        case closing
    }

    /// Stopper ends a response whose writer may be stuck on a client that does not read: it cancels the task that
    /// writes the body (its pending write then fails and the connection closes), but only while that body runs.
    final class Stopper: @unchecked Sendable {
        // The task is only touched under the lock, and only until the body that owns it has returned.
        private let task: Mutex<UnsafeCurrentTask?>

        /// A stopper of the task running now.
        init() { task = Mutex(withUnsafeCurrentTask { $0 }) }

        /// Cancels the body's task after `grace` unless it has returned by then.
        func stop(after grace: Duration) {
            Task {
                try? await Task.sleep(for: grace)
                self.task.withLock { $0?.cancel() }
            }
        }

        /// The body has returned: nothing is cancelled from now on.
        func finished() { task.withLock { $0 = nil } }
    }

    /// The Server-Sent Events responses in progress, so that closing the gateway ends them instead of waiting for
    /// clients that never leave.
    final class LiveResponses: Sendable {
        private struct State {
            var feeds: [Int: (AsyncStream<Item>.Continuation, Stopper)] = [:]
            var next = 0
            var closed = false
        }
        private let state = Mutex(State())

        /// Registers a response's feed; nil once closing (the response ends at once).
        func add(_ feed: AsyncStream<Item>.Continuation, _ stopper: Stopper) -> Int? {
            state.withLock { s in
                if s.closed { return nil }
                s.next += 1
                s.feeds[s.next] = (feed, stopper)
                return s.next
            }
        }

        func remove(_ id: Int) { _ = state.withLock { $0.feeds.removeValue(forKey: id) } }

        /// Ends every response, and those that start from now on.
        func close() {
            let feeds = state.withLock { s in
                s.closed = true
                return Array(s.feeds.values)
            }
            for (feed, stopper) in feeds {
                feed.yield(.closing)
                stopper.stop(after: .milliseconds(500))
            }
        }
    }

    /// The shared tails a response has joined, left when it ends.
    private final class Memberships: Sendable {
        private let list = Mutex<[SharedTails.Membership]>([])
        func add(_ m: SharedTails.Membership) { list.withLock { $0.append(m) } }
        func leaveAll() { for m in list.withLock({ $0 }) { m.leave() } }
    }

    /// A count of the bytes read but not yet written to the HTTP client.
    private final class Backlog: Sendable {
        let bytes = Atomic<Int>(0)
    }

    /// The Server-Sent Events body: every event of `cursors`' segments from there on, as they arrive, each
    /// `id: POSITION` and `data: {JSON}`; it ends when every segment is sealed and read, after `limit` events,
    /// or when the client leaves. POSITION is the event's pointer when one segment is read; with several, the
    /// event's pointer and then the position of every other segment read (comma-separated), so that
    /// `Last-Event-ID` resumes each of them right where it was. A comment every `keepAlive` keeps proxies
    /// open. When more than `backlogLimit` bytes wait for a client that reads too slowly, the response ends with
    /// an `event: error` (`overloaded`), or, when even that cannot be written within 2 s, the connection is
    /// closed: the node's memory does not grow for it.
    static func events(
        _ cursors: [SegmentCursor], name: StreamName, limit: Int, keepAlive: Duration, backlogLimit: Int,
        lease: Lease, live: LiveResponses, tails: SharedTails, logger: Logger
    ) -> ResponseBody {
        ResponseBody { writer in
            let client = lease.client
            var positions = cursors.map { EventPointer(segment: $0.segment, offset: $0.offset, length: 0).description }
            try await writer.write(ByteBuffer(string: "retry: 1000\n: eddy \(name)\n\n"))
            let (items, feed) = AsyncStream<Item>.makeStream()
            let stopper = Stopper()
            defer { stopper.finished() }
            guard let registration = live.add(feed, stopper) else { return try await writer.finish(nil) }
            defer { live.remove(registration) }
            let backlog = Backlog()
            let memberships = Memberships()
            defer { memberships.leaveAll() }
            // Hands events of segment `i` to the writer; false when the client reads too slowly (the response ends).
            let push: @Sendable (Int, [PointedEvent]) -> Bool = { i, events in
                let bytes = events.reduce(0) { $0 + $1.event.payload.count + 160 }
                if backlog.bytes.add(bytes, ordering: .relaxed).newValue > backlogLimit {
                    // The writer says so if it can; stuck on the client, it is stopped.
                    feed.yield(.overflow)
                    stopper.stop(after: .seconds(2))
                    return false
                }
                feed.yield(.events(i, events, bytes: bytes))
                return true
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, start) in cursors.enumerated() {
                    group.addTask {
                        // Reads on its own while behind the segment's shared tail, then joins it.
                        var cursor = start
                        let receive: SharedTails.Receiver = { delivery in
                            switch delivery {
                            case .events(let events): return push(i, events)
                            case .ended: feed.yield(.ended(i))
                            case .failed(let error): feed.yield(.failed(error))
                            }
                            return false
                        }
                        do {
                            while true {
                                switch tails.join(client, cursor.segment, at: cursor.pendingOffset, receive) {
                                case .joined(let membership):
                                    memberships.add(membership)
                                    return
                                case .refused:
                                    return
                                case .behind:
                                    let (info, events) = try await cursor.step(client, wait: .zero)
                                    if !events.isEmpty {
                                        guard push(i, events) else { return }
                                    } else if info.sealed && cursor.pendingOffset >= info.length {
                                        feed.yield(.ended(i))
                                        return
                                    } else {
                                        try await Task.sleep(for: .milliseconds(20))
                                    }
                                }
                            }
                        } catch is CancellationError {
                        } catch let error as EddyError {
                            feed.yield(.failed(error))
                        } catch {
                            feed.yield(.failed(EddyError(.internalError, "\(error)")))
                        }
                    }
                }
                group.addTask {
                    while true {
                        try await Task.sleep(for: keepAlive)
                        feed.yield(.keepAlive)
                    }
                }
                var ended = 0
                var left = limit
                loop: for await item in items {
                    switch item {
                    case .events(_, let events, let bytes) where positions.count == 1 && events.count == 1:
                        // One event of a one-segment stream: its shared frame, written as it is.
                        let line = rendered.line(events[0])
                        positions[0] = line.pointer
                        left -= 1
                        try await writer.write(line.frame)
                        backlog.bytes.subtract(bytes, ordering: .relaxed)
                        if left == 0 { break loop }
                    case .events(let i, let events, let bytes):
                        var out = ByteBuffer()
                        for e in events.prefix(left) {
                            let line = rendered.line(e)
                            positions[i] = line.pointer
                            left -= 1
                            if positions.count == 1 {
                                out.writeImmutableBuffer(line.frame)
                                continue
                            }
                            let id = ([positions[i]] + positions.indices.filter { $0 != i }.map { positions[$0] })
                                .joined(separator: ",")
                            out.writeString("id: ")
                            out.writeString(id)
                            out.writeString("\ndata: ")
                            out.writeBytes(line.json)
                            out.writeString("\n\n")
                        }
                        try await writer.write(out)
                        backlog.bytes.subtract(bytes, ordering: .relaxed)
                        if left == 0 { break loop }
                    case .ended:
                        ended += 1
                        if ended == cursors.count { break loop }
                    case .failed(let error):
                        try await writer.write(
                            ByteBuffer(string: "event: error\ndata: \(GatewayResponse.errorLine(error))\n\n"))
                        break loop
                    case .overflow:
                        logger.notice(
                            "http reader of \(name) closed: it reads too slowly",
                            metadata: ["backlog_bytes": "\(backlog.bytes.load(ordering: .relaxed))"])
                        let error = EddyError(
                            .overloaded, "more than \(backlogLimit) bytes waited for this reader: it reads too slowly")
                        try await writer.write(
                            ByteBuffer(string: "event: error\ndata: \(GatewayResponse.errorLine(error))\n\n"))
                        break loop
                    case .keepAlive:
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    case .closing:
                        break loop
                    }
                }
                group.cancelAll()
                feed.finish()
            }
            try await writer.finish(nil)
        }
    }
}
