import CacheCore
import Foundation
import StreamModel
import Synchronization

/// ByteBudget caps the block bytes in flight in the node (store loads, answers being written): a request past
/// the cap waits its turn, in arrival order, up to a timeout, instead of growing memory.
final class ByteBudget: Sendable {
    struct Waiter {
        var bytes: Int64
        var continuation: CheckedContinuation<Bool, Never>
    }

    struct State {
        var used: Int64 = 0
        var queue: [(id: Int, waiter: Waiter)] = []
        var nextID = 0
    }

    let limit: Int64
    private let state = Mutex(State())

    init(limit: Int64) { self.limit = limit }

    /// Bytes taken now.
    var used: Int64 { state.withLock { $0.used } }

    /// Takes `bytes` of the budget, waiting up to `timeout` for room. A request larger than the whole budget
    /// gets it when nothing else is in flight.
    /// - Throws: ``EddyError/Code/overloaded`` when the timeout passes first.
    func acquire(_ bytes: Int64, timeout: Duration) async throws(EddyError) {
        let id: Int? = state.withLock { s in
            if Self.take(bytes, &s, limit: limit) { return nil }
            defer { s.nextID += 1 }
            return s.nextID
        }
        guard let id else { return }
        let granted = await withTaskGroup(of: Bool?.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                    self.state.withLock { s in s.queue.append((id, Waiter(bytes: bytes, continuation: c))) }
                    self.grant()
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let c = self.state.withLock { s -> CheckedContinuation<Bool, Never>? in
                    guard let i = s.queue.firstIndex(where: { $0.id == id }) else { return nil }
                    return s.queue.remove(at: i).waiter.continuation
                }
                c?.resume(returning: false)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if granted != true {
            throw EddyError(
                .overloaded, "the node has \(limit) bytes in flight; no room within \(timeout)")
        }
    }

    /// Takes `bytes` now if there is room and no request queues for it; false otherwise (nothing taken).
    func tryAcquire(_ bytes: Int64) -> Bool {
        state.withLock { Self.take(bytes, &$0, limit: limit) }
    }

    private static func take(_ bytes: Int64, _ s: inout State, limit: Int64) -> Bool {
        guard s.queue.isEmpty && (s.used + bytes <= limit || s.used == 0) else { return false }
        s.used += bytes
        return true
    }

    /// Gives back bytes and lets waiting requests in.
    func release(_ bytes: Int64) {
        state.withLock { $0.used -= bytes }
        grant()
    }

    private func grant() {
        let ready = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            var out: [CheckedContinuation<Bool, Never>] = []
            while let first = s.queue.first, s.used + first.waiter.bytes <= limit || s.used == 0 {
                s.queue.removeFirst()
                s.used += first.waiter.bytes
                out.append(first.waiter.continuation)
            }
            return out
        }
        for c in ready { c.resume(returning: true) }
    }
}
