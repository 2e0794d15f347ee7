/// LFU: evict the least frequently used object; among equals, the one that reached that count first.
///
/// In-cache LFU as libCacheSim's `LFU` defines it (the O(1) bucket structure of Shah, Mitra and Matani, "An
/// O(1) algorithm for implementing the LFU cache eviction scheme", 2010): a new object starts at count 1, a hit
/// adds one and appends the object to its new count's bucket, eviction takes the oldest object of the lowest
/// non-empty bucket, and the count is forgotten on eviction. Pick it for stable popularity; it holds on to
/// formerly hot objects (no aging).
public final class LFU: PolicyBase, EvictionPolicy {
    /// Bucket lists by count: oldest at `bucketHead`, newest at `bucketTail`.
    private var bucketHead: [Int32] = [NodeStore.none, NodeStore.none]
    private var bucketTail: [Int32] = [NodeStore.none, NodeStore.none]
    private var bucketCount: [Int] = [0, 0]
    private var minFrequency = 1
    private var maxFrequency = 1

    public var name: String { "lfu" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        let old = Int(nodes.b[Int(n)])
        unlinkFromBucket(n, old)
        let new = old + 1
        nodes.b[Int(n)] = Int64(new)
        if new > maxFrequency { maxFrequency = new }
        appendToBucket(n, new)
        if minFrequency == old && bucketCount[old] == 0 { advanceMinimum() }
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            let victim = bucketHead[minFrequency]
            unlinkFromBucket(victim, minFrequency)
            if bucketCount[minFrequency] == 0 { advanceMinimum() }
            dropResident(victim)
        }
        minFrequency = 1
        let n = newResident(request)
        nodes.b[Int(n)] = 1
        appendToBucket(n, 1)
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        let f = Int(nodes.b[Int(n)])
        unlinkFromBucket(n, f)
        dropResident(n, report: false)
        if f == minFrequency && bucketCount[f] == 0 { advanceMinimum() }
        return true
    }

    private func advanceMinimum() {
        var f = minFrequency + 1
        while f <= maxFrequency {
            if bucketCount[f] > 0 {
                minFrequency = f
                return
            }
            f += 1
        }
    }

    private func appendToBucket(_ n: Int32, _ f: Int) {
        while bucketHead.count <= f {
            bucketHead.append(NodeStore.none)
            bucketTail.append(NodeStore.none)
            bucketCount.append(0)
        }
        let i = Int(n)
        nodes.next[i] = NodeStore.none
        nodes.prev[i] = bucketTail[f]
        if bucketTail[f] != NodeStore.none { nodes.next[Int(bucketTail[f])] = n } else { bucketHead[f] = n }
        bucketTail[f] = n
        bucketCount[f] += 1
    }

    private func unlinkFromBucket(_ n: Int32, _ f: Int) {
        let i = Int(n)
        let p = nodes.prev[i]
        let q = nodes.next[i]
        if p != NodeStore.none { nodes.next[Int(p)] = q } else { bucketHead[f] = q }
        if q != NodeStore.none { nodes.prev[Int(q)] = p } else { bucketTail[f] = p }
        bucketCount[f] -= 1
    }
}
