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
