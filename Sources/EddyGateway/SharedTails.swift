import EddyClient
import StreamModel
import Synchronization

/// SharedTails gives the Server-Sent Events responses that follow the same segment with the same node client
/// (one bearer token) one follower of that segment: a thousand web readers of a tail cost one subscription on
/// the gateway's node connection, one decode and one check of each event, then a write per response. The
/// node still authorizes the follower with that token, so nobody gets events their token could not read.
///
/// A tail keeps its most recent events (up to ``keepBytes``), so that a response joining a little behind it (it
/// started from `tail` a moment earlier, or from a pointer just read) is handed those first. A response further
/// behind reads on its own up to the tail's window, then joins. A tail ends, and is forgotten, when its last
/// response leaves, when its segment is sealed and read, or when its follower fails (every response gets the
/// error; the next to come starts a new tail).
final class SharedTails: Sendable {
    /// What a tail hands a response: events (from its offset on), its end (sealed and read), or its failure.
    enum Delivery {
        case events([PointedEvent])
        case ended
        case failed(EddyError)
    }
    /// A response's receiver of deliveries; it answers false to leave (a reader too slow, or gone). It is called
    /// under the tails' lock: it must only hand the delivery on (an `AsyncStream` yield), never wait.
    typealias Receiver = @Sendable (Delivery) -> Bool

    /// A response's place in a tail; ``leave()`` when the response ends.
    final class Membership: Sendable {
        fileprivate let key: Key
        fileprivate let id: Int
        fileprivate let tails: SharedTails
        fileprivate init(key: Key, id: Int, tails: SharedTails) {
            self.key = key
            self.id = id
            self.tails = tails
        }

        /// Leaves the tail (the last response to leave stops its follower).
        func leave() { tails.leave(key, id) }
    }

    /// How a join went: joined; behind the tail's window (read on your own from there, then join again); or
    /// refused by the receiver itself (the events held were more than it takes: the response is ending).
    enum Joined {
        case joined(Membership)
        case behind
        case refused
    }

    fileprivate struct Key: Hashable {
        var client: ObjectIdentifier
        var segment: SegmentID
    }

    /// One followed segment; only touched under the lock (a class, so that its window grows in place).
    private final class Tail {
        /// Which tail of its key this is: a follower that outlives its tail does not touch the next one.
        let generation: Int
        /// The receivers and the offset each takes events from.
        var receivers: [Int: (from: UInt64, receive: Receiver)] = [:]
        /// The recent events (from `head` on), oldest first, and their payload bytes.
        var recent: [PointedEvent] = []
        var head = 0
        var bytes = 0
        /// Where the recent events start (the follower's start while it has none).
        var windowStart: UInt64
        var follower: Task<Void, Never>?

        init(generation: Int, start: UInt64) {
            self.generation = generation
            windowStart = start
        }

        /// The recent events at or after `offset` (they are in offset order).
        func held(from offset: UInt64) -> ArraySlice<PointedEvent> {
            var low = head
            var high = recent.count
            while low < high {
                let middle = (low + high) / 2
                if recent[middle].pointer.offset < offset { low = middle + 1 } else { high = middle }
            }
            return recent[low...]
        }

        /// Keeps `events`, dropping the oldest past `limit` bytes.
        func keep(_ events: [PointedEvent], limit: Int) {
            recent.append(contentsOf: events)
            bytes += events.reduce(0) { $0 + $1.event.payload.count }
            while bytes > limit, head < recent.count - 1 {
                bytes -= recent[head].event.payload.count
                head += 1
            }
            if head > 1024 && head * 2 > recent.count {
                recent.removeFirst(head)
                head = 0
            }
            windowStart = recent[head].pointer.offset
        }
    }

    private struct State {
        var tails: [Key: Tail] = [:]
        var nextID = 0
    }

    private let state = Mutex(State())
    /// The most payload bytes a tail keeps for responses that join behind it.
    let keepBytes: Int

    init(keepBytes: Int = 4 << 20) { self.keepBytes = keepBytes }

    /// How many tails are followed now.
    var count: Int { state.withLock { $0.tails.count } }

    /// Joins the tail of `segment` followed with `client` at `offset` (an event boundary): `receive` gets every
    /// event from there on, the recent ones the tail holds at once. A tail starts at `offset` when there is none.
    func join(_ client: EddyClient, _ segment: SegmentID, at offset: UInt64, _ receive: @escaping Receiver) -> Joined {
        let key = Key(client: ObjectIdentifier(client), segment: segment)
        let (joined, start): (Joined, Int?) = state.withLock { s in
            s.nextID += 1
            let id = s.nextID
            let tail: Tail
            var created: Int?
            if let existing = s.tails[key] {
                tail = existing
                guard offset >= tail.windowStart else { return (.behind, nil) }
                let held = tail.held(from: offset)
                if !held.isEmpty && !receive(.events(Array(held))) { return (.refused, nil) }
            } else {
                tail = Tail(generation: id, start: offset)
                s.tails[key] = tail
                created = id
            }
            tail.receivers[id] = (offset, receive)
            return (.joined(Membership(key: key, id: id, tails: self)), created)
        }
        if let generation = start {
            let cursor = SegmentCursor(segment: segment, offset: offset)
            let task = Task { await self.follow(key, generation, client, cursor) }
            let orphan = state.withLock { s -> Bool in
                guard let tail = s.tails[key], tail.generation == generation, tail.follower == nil else { return true }
                tail.follower = task
                return false
            }
            if orphan { task.cancel() }
        }
        return joined
    }

    private func leave(_ key: Key, _ id: Int) {
        let stop: Task<Void, Never>? = state.withLock { s in
            guard let tail = s.tails[key], tail.receivers.removeValue(forKey: id) != nil else { return nil }
            guard tail.receivers.isEmpty else { return nil }
            s.tails[key] = nil
            return tail.follower
        }
        stop?.cancel()
    }

    /// The follower of one tail: it hands each batch to every receiver and keeps it in the window.
    private func follow(_ key: Key, _ generation: Int, _ client: EddyClient, _ cursor: SegmentCursor) async {
        let last: Delivery
        do {
            _ = try await client.follow(cursor) { _, events in
                guard !events.isEmpty else { return true }
                return self.hand(key, generation, events)
            }
            last = .ended
        } catch is CancellationError {
            return
        } catch let error as EddyError {
            last = .failed(error)
        } catch {
            last = .failed(EddyError(.internalError, "\(error)"))
        }
        let receivers = state.withLock { s -> [Receiver] in
            guard let tail = s.tails[key], tail.generation == generation else { return [] }
            s.tails[key] = nil
            return tail.receivers.values.map(\.receive)
        }
        for receive in receivers { _ = receive(last) }
    }

    /// Hands `events` to the tail's receivers and keeps them; false when the tail is gone (its follower stops).
    private func hand(_ key: Key, _ generation: Int, _ events: [PointedEvent]) -> Bool {
        let limit = keepBytes
        return state.withLock { s in
            guard let tail = s.tails[key], tail.generation == generation else { return false }
            let first = events[0].pointer.offset
            for (id, r) in tail.receivers {
                let batch = r.from <= first ? events : events.filter { $0.pointer.offset >= r.from }
                if !batch.isEmpty && !r.receive(.events(batch)) { tail.receivers[id] = nil }
            }
            tail.keep(events, limit: limit)
            if tail.receivers.isEmpty {
                s.tails[key] = nil
                return false
            }
            return true
        }
    }
}
