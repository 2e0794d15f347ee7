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
