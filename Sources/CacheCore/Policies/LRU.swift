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
