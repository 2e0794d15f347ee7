/// ARC: adaptive replacement between a recency list and a frequency list, steered by two ghost lists.
///
/// Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST 2003; semantics as in
/// libCacheSim's `ARC`. T1 holds objects seen once recently, T2 objects seen at least twice; B1 and B2 remember
/// what was evicted from each. A hit in B1 grows the target size `p` of T1 (by |B2|/|B1|, at least 1), a hit in
/// B2 shrinks it; REPLACE evicts from T1 when it is over `p`, else from T2. The ghost lists hold about the cache
/// size. Pick it when the workload shifts between recency and frequency and you cannot tune by hand.
public final class ARC: PolicyBase, EvictionPolicy {
    static let t1 = 0
    static let t2 = 1
    static let b1 = 2
    static let b2 = 3

    /// The target size of T1; fractional, as in the paper's reference implementations.
    private var p: Double = 0

    public var name: String { "arc" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        let l = Int(nodes.list[Int(n)])
        guard l == Self.t1 || l == Self.t2 else { return false }
        nodes.moveToHead(n, Self.t2)
        return true
    }

    public func admit(_ request: CacheRequest) {
        var ghost: Int? = nil
        if let n = index.get(request.id) {
            let b1 = Double(nodes.bytes[Self.b1])
            let b2 = Double(nodes.bytes[Self.b2])
            let l = Int(nodes.list[Int(n)])
            if l == Self.b1 {
                p = min(p + max(b2 / b1, 1), Double(capacity))  // case II: grow T1's target
            } else {
                p = max(p - max(b1 / b2, 1), 0)  // case III: shrink it
            }
            ghost = l
            dropGhost(n)
        }
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            if let ghost {
                replace(inB2: ghost == Self.b2)
            } else {
                evictOnCompleteMiss(incoming: request.size)
            }
        }
        nodes.pushHead(newResident(request), ghost != nil ? Self.t2 : Self.t1)
    }

    /// REPLACE from the paper: demote the LRU end of T1 (when it is over its target, or T2 is empty) or of T2
    /// to its ghost list.
    private func replace(inB2: Bool) {
        let t1 = nodes.bytes[Self.t1]
        let overTarget = Double(t1) > p || (Double(t1) == p && inB2)
        let from = (t1 > 0 && overTarget) || nodes.bytes[Self.t2] == 0 ? Self.t1 : Self.t2
        let victim = nodes.tail[from]
        guard victim != NodeStore.none else { return }
        nodes.unlink(victim)
        used -= nodes.size[Int(victim)]
        resident -= 1
        evictionHandler?(nodes.id[Int(victim)])
        nodes.pushHead(victim, from == Self.t1 ? Self.b1 : Self.b2)
    }

    private func dropGhostTail(_ l: Int) {
        let g = nodes.tail[l]
        if g != NodeStore.none { dropGhost(g) }
    }

    /// Case IV of the paper: a miss in all four lists.
    private func evictOnCompleteMiss(incoming: Int64) {
        let t1 = nodes.bytes[Self.t1]
        let b1 = nodes.bytes[Self.b1]
        if t1 + b1 + incoming > capacity {
            if b1 > 0 {
                dropGhostTail(Self.b1)
                replace(inB2: false)
            } else {
                let victim = nodes.tail[Self.t1]
                nodes.unlink(victim)
                dropResident(victim)
            }
        } else {
            if t1 + b1 + nodes.bytes[Self.t2] + nodes.bytes[Self.b2] >= 2 * capacity && nodes.bytes[Self.b2] > 0 {
                dropGhostTail(Self.b2)
            }
            replace(inB2: false)
        }
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        let l = Int(nodes.list[Int(n)])
        nodes.unlink(n)
        if l == Self.t1 || l == Self.t2 {
            dropResident(n, report: false)
            return true
        }
        index.remove(id)
        nodes.free(n)
        return false
    }
}

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
    public init(capacity: Int64, inRatio: Double = 0.25, outRatio: Double = 0.5) {
        inCapacity = Int64(Double(capacity) * inRatio)
        outCapacity = Int64(Double(capacity) * outRatio)
        mainCapacity = capacity - inCapacity
        super.init(capacity: capacity)
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
            remember(id, size)
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

    private func remember(_ id: UInt64, _ size: Int64) {
        guard size <= outCapacity else { return }
        while nodes.bytes[Self.a1out] + size > outCapacity { dropGhost(nodes.tail[Self.a1out]) }
        let n = nodes.allocate(id: id, size: size)
        index.set(id, n)
        nodes.pushHead(n, Self.a1out)
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
