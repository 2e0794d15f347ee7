/// CLOCK: FIFO with reinsertion (second chance).
///
/// Corbató, "A paging experiment with the Multics system", 1968. A hit raises the object's counter (one bit by
/// default, `maxFrequency` = 1). At eviction the oldest object is examined: with a non-zero counter it is
/// decremented and reinserted at the head; the first object found at zero is evicted. Matches libCacheSim's
/// `Clock`. Pick it for LRU-like hit ratios with FIFO-cheap hits.
public final class Clock: PolicyBase, EvictionPolicy {
    /// The counter's ceiling: 1 for the one-bit CLOCK, 3 for a two-bit counter.
    public let maxFrequency: Int32

    /// Creates a CLOCK of `capacity` with counters up to `maxFrequency`.
    public init(capacity: Int64, maxFrequency: Int32 = 1, objectSize: Int64 = 1) {
        self.maxFrequency = maxFrequency
        super.init(capacity: capacity, objectSize: objectSize)
    }

    public var name: String { "clock" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        if nodes.a[Int(n)] < maxFrequency { nodes.a[Int(n)] += 1 }
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            var victim = nodes.tail[0]
            while nodes.a[Int(victim)] >= 1 {
                nodes.a[Int(victim)] -= 1
                nodes.moveToHead(victim, 0)
                victim = nodes.tail[0]
            }
            nodes.unlink(victim)
            dropResident(victim)
        }
        nodes.pushHead(newResident(request), 0)
    }

    public func remove(_ id: UInt64) -> Bool { removeResident(id) }
}
