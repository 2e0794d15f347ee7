/// LRU: evict the least recently used object.
///
/// The textbook policy (see e.g. Mattson et al., "Evaluation techniques for storage hierarchies", 1970, for
/// its stack property). One list, newest at the head; a hit moves the object to the head; the tail is evicted.
/// Pick it as the baseline, or for workloads with strong recency and no scans.
public final class LRU: PolicyBase, EvictionPolicy {
    public var name: String { "lru" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        nodes.moveToHead(n, 0)
        return true
    }

    public func admit(_ request: CacheRequest) { admitAtHead(request) }

    public func remove(_ id: UInt64) -> Bool { removeResident(id) }
}

/// FIFO: evict the object that entered first; hits change nothing.
///
/// The oldest policy there is (Belady, "A study of replacement algorithms for a virtual-storage computer",
/// 1966). Cheapest on a hit (no metadata write), which is why the FIFO family (CLOCK, SIEVE, S3-FIFO) builds
/// on it.
public final class FIFO: PolicyBase, EvictionPolicy {
    public var name: String { "fifo" }

    public func lookup(_ request: CacheRequest) -> Bool { index.get(request.id) != nil }

    public func admit(_ request: CacheRequest) { admitAtHead(request) }

    public func remove(_ id: UInt64) -> Bool { removeResident(id) }
}
