import NIOCore
import NIOPosix

/// LoopTimers runs actions at deadlines on one event loop, for timeouts that are set often and mostly cancelled
/// (request timeouts, the deadlines of parked tail reads).
///
/// A NIO timer per deadline does not scale to thousands of them: NIO keeps its timers in a heap, and cancelling
/// one searches the whole heap, so waking a thousand parked reads cost a million steps. Here deadlines fall into
/// slots of ``granularity``; each slot has one NIO timer, made when its first deadline arrives and never
/// cancelled, and adding or cancelling a deadline is a dictionary operation. An action runs at the end of its
/// slot: never before its deadline, at most ``granularity`` after it.
///
/// Use it only on its event loop (``current(on:)`` checks that).
public final class LoopTimers {
    /// Names a scheduled action, to cancel it.
    public struct Token: Sendable, Hashable {
        fileprivate let slot: Int64
        fileprivate let id: UInt64
    }

    /// The width of a slot, in nanoseconds.
    public static let granularity: Int64 = 10_000_000

    private let eventLoop: any EventLoop
    private var slots: [Int64: [UInt64: () -> Void]] = [:]
    private var nextID: UInt64 = 0

    /// One per event loop thread (an event loop is one thread).
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<LoopTimers>()

    private init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// The timers of `eventLoop`, which must be the loop the caller runs on.
    public static func current(on eventLoop: any EventLoop) -> LoopTimers {
        eventLoop.preconditionInEventLoop()
        if let timers = perThread.currentValue, timers.eventLoop === eventLoop { return timers }
        let timers = LoopTimers(eventLoop)
        perThread.currentValue = timers
        return timers
    }

    /// Runs `action` on the loop once `deadline` has passed, unless cancelled first.
    @discardableResult
    public func schedule(at deadline: NIODeadline, _ action: @escaping () -> Void) -> Token {
        let g = Self.granularity
        let slot = (Int64(clamping: deadline.uptimeNanoseconds) + g - 1) / g
        nextID &+= 1
        if slots[slot] == nil {
            slots[slot] = [:]
            eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(deadline: .uptimeNanoseconds(UInt64(slot * g))) {
                self.fire(slot)
            }
        }
        slots[slot]![nextID] = action
        return Token(slot: slot, id: nextID)
    }

    /// Runs `action` on the loop after `delay`, unless cancelled first.
    @discardableResult
    public func schedule(in delay: TimeAmount, _ action: @escaping () -> Void) -> Token {
        schedule(at: .now() + delay, action)
    }

    /// Cancels an action; nothing happens if it ran already.
    public func cancel(_ token: Token) {
        slots[token.slot]?.removeValue(forKey: token.id)
    }

    /// Deadlines waiting now (for tests and stats).
    public var count: Int { slots.values.reduce(0) { $0 + $1.count } }

    private func fire(_ slot: Int64) {
        guard let due = slots.removeValue(forKey: slot) else { return }
        for action in due.values { action() }
    }
}
