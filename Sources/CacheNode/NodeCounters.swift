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
    /// Pushes written straight from an owned segment's tail to a following subscription (no read).
    let tailPushes = Atomic<Int>(0)
    /// A regional node's subscriptions at its home ring (one per segment it follows there).
    let upstreamSubscriptions = Atomic<Int>(0)
    /// Chunks a regional node's upstream subscriptions pushed to it (bytes and heartbeats).
    let upstreamPushes = Atomic<Int>(0)
    let appends = Atomic<Int>(0)
    let staleForwards = Atomic<Int>(0)
    let ringChanges = Atomic<Int>(0)
    let bytesServed = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    /// Requests being answered by a task (parked tail reads not included): a drain waits for them.
    let inFlight = Atomic<Int>(0)
}
