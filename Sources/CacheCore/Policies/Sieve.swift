/// SIEVE: FIFO order, one visited bit, and a hand that keeps its place.
///
/// Zhang et al., "SIEVE is Simpler than LRU: an Efficient Turn-Key Eviction Algorithm for Web Caches",
/// NSDI 2024. New objects enter at the head. A hit sets the visited bit. To evict, the hand starts where it
/// last stopped (at first the oldest object) and moves toward newer objects, clearing visited bits, wrapping to
/// the oldest; it evicts the first unvisited object and stays just newer than it. Objects never move, so hits
/// are lock-free in a real cache. Pick it for web-like skewed workloads.
public final class Sieve: PolicyBase, EvictionPolicy {
    private var hand: Int32 = NodeStore.none

    public var name: String { "sieve" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        nodes.a[Int(n)] = 1
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity { evictOne() }
        nodes.pushHead(newResident(request), 0)
    }

    private func evictOne() {
        var n = hand != NodeStore.none ? hand : nodes.tail[0]
        while nodes.a[Int(n)] != 0 {
            nodes.a[Int(n)] = 0
            let newer = nodes.prev[Int(n)]
            n = newer != NodeStore.none ? newer : nodes.tail[0]
        }
        hand = nodes.prev[Int(n)]
        nodes.unlink(n)
        dropResident(n)
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        if hand == n { hand = nodes.prev[Int(n)] }
        nodes.unlink(n)
        dropResident(n, report: false)
        return true
    }
}
