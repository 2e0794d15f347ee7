/// 2Q: a FIFO for first-time objects (A1in), a ghost FIFO of their IDs (A1out), and an LRU for objects seen
/// again (Am).
///
/// Johnson and Shasha, "2Q: A Low Overhead High Performance Buffer Management Replacement Algorithm", VLDB 1994,
/// the full version; semantics as in libCacheSim's `TwoQ`. A miss whose ID is in A1out goes to Am; any other
/// miss goes to A1in (25 % of the capacity). Hits in A1in change nothing, hits in Am move to its head. Eviction
/// takes A1in's oldest into A1out (50 % of the capacity) while A1in is over its share, else Am's LRU end.
/// Am is itself bounded by the rest of the capacity. Pick it for scan resistance with LRU-like behaviour.
public final class TwoQ: PolicyBase, EvictionPolicy {
    static let a1in = 0
    static let am = 1
    static let a1out = 2

    let inCapacity: Int64
    let outCapacity: Int64
    let mainCapacity: Int64

    /// Creates a 2Q of `capacity` with A1in and A1out shares.
    public init(capacity: Int64, inRatio: Double = 0.25, outRatio: Double = 0.5, objectSize: Int64 = 1) {
        inCapacity = Int64(Double(capacity) * inRatio)
        outCapacity = Int64(Double(capacity) * outRatio)
        mainCapacity = capacity - inCapacity
        super.init(capacity: capacity, objectSize: objectSize)
    }

    public var name: String { "2q" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        switch Int(nodes.list[Int(n)]) {
        case Self.a1in: return true
        case Self.am:
            nodes.moveToHead(n, Self.am)
            return true
        default: return false
        }
    }

    public func admit(_ request: CacheRequest) {
        var ghostHit = false
        if let n = index.get(request.id) {
            dropGhost(n)
            ghostHit = true
        }
        guard request.size <= inCapacity, request.size <= capacity else { return }
        while used + request.size > capacity { evict() }
        if ghostHit {
            // Am is a bounded LRU of its own: it may evict to take the object even when the whole has room.
            guard request.size <= mainCapacity else { return }
            while nodes.bytes[Self.am] + request.size > mainCapacity { evictMain() }
            nodes.pushHead(newResident(request), Self.am)
        } else {
            nodes.pushHead(newResident(request), Self.a1in)
        }
    }

    private func evict() {
        if nodes.bytes[Self.a1in] > inCapacity {
            let n = nodes.tail[Self.a1in]
            let id = nodes.id[Int(n)]
            let size = nodes.size[Int(n)]
            nodes.unlink(n)
            dropResident(n)
            rememberGhost(id, size: size, list: Self.a1out, limit: outCapacity)
        } else {
            evictMain()
        }
    }

    private func evictMain() {
        let n = nodes.tail[Self.am]
        guard n != NodeStore.none else { return }
        nodes.unlink(n)
        dropResident(n)
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        let l = Int(nodes.list[Int(n)])
        nodes.unlink(n)
        if l == Self.a1out {
            index.remove(id)
            nodes.free(n)
            return false
        }
        dropResident(n, report: false)
        return true
    }
}
