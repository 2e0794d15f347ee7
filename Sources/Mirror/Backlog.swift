import EddyClient
import StreamModel
import Synchronization

/// Backlog holds the events of one segment that the source pushed and the target does not have yet, between the
/// mirror's follow of the source (which puts each push) and its appender (which takes everything waiting as one
/// batch). So when target appends are slower than the source's pushes (many small appends at the source, each
/// pushed on its own), the batches grow instead of the lag: one target append carries all that came meanwhile.
///
/// At most `limit` bytes wait: past it, ``put(_:info:)`` waits, and so, through the subscription's byte window,
/// does the source. Heartbeats (empty pushes) go through too, so the appender sees the source's latest state in
/// order with the events.
final class Backlog: Sendable {
    private struct State {
        var events: [PointedEvent] = []
        var bytes = 0
        /// The source's state with the last put, not yet taken.
        var info: SegmentInfo?
        /// No more puts come.
        var closed = false
        /// The appender failed: puts throw this.
        var failure: (any Error)?
        var taker: CheckedContinuation<Void, Never>?
        var givers: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextGiver = 0
    }

    /// Bytes that may wait before a put waits.
    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    /// Adds a push (`events` may be empty: a heartbeat), waiting while `limit` bytes or more wait already.
    /// - Throws: the appender's failure (see ``fail(_:)``), or `CancellationError`.
    func put(_ events: [PointedEvent], info: SegmentInfo) async throws {
        while true {
            try Task.checkCancellation()
            let id = state.withLock { s -> Int? in
                if s.bytes < limit || s.failure != nil { return nil }
                defer { s.nextGiver += 1 }
                return s.nextGiver
            }
            guard let id else { break }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { s -> Bool in
                        if s.bytes < limit || s.failure != nil || Task.isCancelled { return true }
                        s.givers[id] = c
                        return false
                    }
                    if ready { c.resume() }
                }
            } onCancel: {
                state.withLock { $0.givers.removeValue(forKey: id) }?.resume()
            }
        }
        let taker = try state.withLock { s throws -> CheckedContinuation<Void, Never>? in
            if let failure = s.failure { throw failure }
            s.events += events
            s.bytes += events.reduce(0) { $0 + Int($1.pointer.length) }
            s.info = info
            defer { s.taker = nil }
            return s.taker
        }
        taker?.resume()
    }

    /// Takes what waits, up to `maxBytes` of events (at least one event when any waits), with the source's state
    /// at the last of them; waits while nothing does. Nil once the backlog is closed and empty.
    func take(maxBytes: Int) async -> (info: SegmentInfo, events: [PointedEvent])? {
        while true {
            let (batch, wake) = state.withLock {
                s -> ((SegmentInfo, [PointedEvent])?, [CheckedContinuation<Void, Never>]) in
                guard let info = s.info else { return (nil, []) }
                var count = 0
                var size = 0
                while count < s.events.count, count == 0 || size + Int(s.events[count].pointer.length) <= maxBytes {
                    size += Int(s.events[count].pointer.length)
                    count += 1
                }
                let taken = Array(s.events.prefix(count))
                s.events.removeFirst(count)
                s.bytes -= size
                // The state goes with the last event taken; while events stay behind, it is kept for them.
                if s.events.isEmpty { s.info = nil }
                let wake = s.bytes < limit ? Array(s.givers.values) : []
                if !wake.isEmpty { s.givers = [:] }
                return ((info, taken), wake)
            }
            for c in wake { c.resume() }
            if let batch { return batch }
            if state.withLock({ $0.closed }) { return nil }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.info != nil || s.closed { return true }
                    s.taker = c
                    return false
                }
                if ready { c.resume() }
            }
        }
    }

    /// No more puts: ``take(maxBytes:)`` returns what waits, then nil.
    func close() {
        state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.closed = true
            defer { s.taker = nil }
            return s.taker
        }?.resume()
    }

    /// The appender failed: waiting and later puts throw `error`.
    func fail(_ error: any Error) {
        let givers = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.failure = s.failure ?? error
            defer { s.givers = [:] }
            return Array(s.givers.values)
        }
        for c in givers { c.resume() }
    }
}
