import NIOCore
import NIOPosix
import StreamModel

/// ParkedRead is a tail read parked on its connection's event loop: no task waits for it. Whoever can answer it
/// (bytes arrived at the owner, a shared forward came back, its deadline passed) calls ``wake`` on that event
/// loop, exactly once. Waking many parked reads takes one hop per event loop, not one task per reader: that is
/// what keeps a fan-out of one append to a thousand tail readers cheap.
struct ParkedRead: Sendable {
    /// What a parked read learns when it is woken.
    enum Outcome: Sendable {
        /// New bytes or a new state of the segment: look again.
        case changed
        /// The answer, shared by every read parked on the same forward.
        case answer(ReadAnswer)
        /// The read failed with this error.
        case failed(EddyError)
    }

    let eventLoop: any EventLoop
    let wake: @Sendable (Outcome) -> Void

    /// Wakes `reads` with `outcome`, one hop per event loop.
    static func wake(_ reads: [ParkedRead], _ outcome: Outcome) {
        var byLoop: [ObjectIdentifier: (any EventLoop, [ParkedRead])] = [:]
        for r in reads { byLoop[ObjectIdentifier(r.eventLoop), default: (r.eventLoop, [])].1.append(r) }
        for (loop, group) in byLoop.values {
            loop.execute { for r in group { r.wake(outcome) } }
        }
    }
}

/// Wakeup is the readers to wake after a segment changed: tasks waiting in ``OwnedSegment/waitForBytes`` and
/// parked reads. Taken under the segment's lock, fired after it.
struct Wakeup {
    var tasks: [CheckedContinuation<Void, Never>] = []
    var parked: [ParkedRead] = []

    static let none = Wakeup()

    func fire() {
        for c in tasks { c.resume() }
        ParkedRead.wake(parked, .changed)
    }
}

/// LoopFlusher flushes, once per pass of an event loop, every connection that wrote during it: waking a
/// thousand parked reads writes a thousand answers, and one queued task flushes them all (a task per
/// connection would cost an allocation and a queue operation per answer).
final class LoopFlusher {
    private let eventLoop: any EventLoop
    private var due: [NodeConnectionHandler] = []
    private var spare: [NodeConnectionHandler] = []

    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<LoopFlusher>()

    private init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// The flusher of `eventLoop`, which must be the loop the caller runs on.
    static func current(on eventLoop: any EventLoop) -> LoopFlusher {
        eventLoop.preconditionInEventLoop()
        if let f = perThread.currentValue, f.eventLoop === eventLoop { return f }
        let f = LoopFlusher(eventLoop)
        perThread.currentValue = f
        return f
    }

    /// Flushes `handler`'s connection at the end of this pass of the loop.
    func add(_ handler: NodeConnectionHandler) {
        if due.isEmpty { eventLoop.assumeIsolatedUnsafeUnchecked().execute { self.flush() } }
        due.append(handler)
    }

    private func flush() {
        swap(&due, &spare)
        for h in spare { h.flushNow() }
        spare.removeAll(keepingCapacity: true)
    }
}
