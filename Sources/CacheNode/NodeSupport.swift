import CacheCore
import Foundation
import StreamModel
import Synchronization

/// NodeCounters are the node's event counts (relaxed atomics: each is exact, a snapshot of several is not).
final class NodeCounters: Sendable {
    let reads = Atomic<Int>(0)
    let hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let nearHits = Atomic<Int>(0)
    let forwards = Atomic<Int>(0)
    let coalesced = Atomic<Int>(0)
    let coalescedForwards = Atomic<Int>(0)
    let readAheads = Atomic<Int>(0)
    let tailWaits = Atomic<Int>(0)
    let parkedReads = Atomic<Int>(0)
    let subscriptions = Atomic<Int>(0)
    let appends = Atomic<Int>(0)
    let staleForwards = Atomic<Int>(0)
    let ringChanges = Atomic<Int>(0)
    let bytesServed = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    /// Requests being answered by a task (parked tail reads not included): a drain waits for them.
    let inFlight = Atomic<Int>(0)
}

/// StoreReadLedger records which bytes of which blocks the node read from the store, so it can say how many
/// distinct blocks and bytes it read and whether it read any byte twice (read amplification).
///
/// It remembers the ranges of the most recent `limit` blocks (a million by default, about 100 MB at most); a
/// block forgotten and read again counts as new, so on a node that has read more blocks than that the figures
/// describe the recent past.
final class StoreReadLedger: Sendable {
    struct State {
        var requests = 0
        var bytes: Int64 = 0
        /// Per block, the byte ranges read, merged.
        var ranges: [BlockID: [Range<UInt64>]] = [:]
        /// Blocks in the order they were first recorded, to forget the oldest past the limit.
        var order: [BlockID] = []
        var orderStart = 0
        var blocksSeen = 0
        var distinctBytes: Int64 = 0
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int = 1 << 20) { self.limit = limit }

    func record(_ segment: SegmentID, from offset: UInt64, count: Int, geometry: BlockGeometry) {
        state.withLock { s in
            s.requests += 1
            s.bytes += Int64(count)
            guard count > 0 else { return }
            let range = offset..<(offset + UInt64(count))
            for index in geometry.blocks(covering: range) {
                let block = geometry.range(ofBlock: index)
                let part = max(block.lowerBound, range.lowerBound)..<min(block.upperBound, range.upperBound)
                let id = BlockID(segment: segment, index: index)
                if s.ranges[id] == nil {
                    s.blocksSeen += 1
                    s.order.append(id)
                    if s.order.count - s.orderStart > limit {
                        s.ranges.removeValue(forKey: s.order[s.orderStart])
                        s.orderStart += 1
                        if s.orderStart >= limit {
                            s.order.removeFirst(s.orderStart)
                            s.orderStart = 0
                        }
                    }
                }
                var list = s.ranges[id] ?? []
                let before = list.reduce(UInt64(0)) { $0 + UInt64($1.count) }
                list.append(part)
                list.sort { $0.lowerBound < $1.lowerBound }
                var merged: [Range<UInt64>] = []
                for r in list {
                    if let last = merged.last, r.lowerBound <= last.upperBound {
                        merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
                    } else {
                        merged.append(r)
                    }
                }
                s.ranges[id] = merged
                s.distinctBytes += Int64(merged.reduce(UInt64(0)) { $0 + UInt64($1.count) } - before)
            }
        }
    }

    /// Requests, bytes, distinct blocks and distinct bytes read so far.
    var summary: (requests: Int, bytes: Int64, blocks: Int, distinctBytes: Int64) {
        state.withLock { ($0.requests, $0.bytes, $0.blocksSeen, $0.distinctBytes) }
    }
}

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

/// ReaderState is what the node knows of one reader (a client connection): the last block it read in each
/// segment, whether its reads there are sequential (a catch-up scan), and whether it reads at the tail.
public final class ReaderState: Sendable {
    struct Position {
        var block: UInt64
        var sequential: Bool
        var tail: Bool
    }

    /// The reader's number on this node.
    public let id: Int
    private let positions = Mutex<[SegmentID: Position]>([:])

    /// Creates the state of reader `id`.
    public init(id: Int) { self.id = id }

    func record(_ segment: SegmentID, block: UInt64, tail: Bool) {
        positions.withLock { p in
            if let old = p[segment] {
                let sequential = block == old.block + 1 || (block == old.block && old.sequential)
                p[segment] = Position(block: block, sequential: sequential, tail: tail)
            } else {
                p[segment] = Position(block: block, sequential: false, tail: tail)
            }
        }
    }

    func isSequential(_ segment: SegmentID) -> Bool {
        positions.withLock { $0[segment]?.sequential ?? false }
    }
}
