/// One request as a policy sees it.
public struct CacheRequest: Sendable, Hashable {
    /// The object's ID. For Eddy's blocks it is a ``BlockKey``'s packed value; for traces, the trace's ID.
    public var id: UInt64
    /// The object's weight: 1 when counting objects, its size in bytes otherwise.
    public var size: Int64
    /// When the object is requested next (a request index), or `Int64.max` for never or unknown. Only
    /// ``Belady`` uses it.
    public var nextAccess: Int64

    /// Creates a request.
    public init(id: UInt64, size: Int64 = 1, nextAccess: Int64 = .max) {
        self.id = id
        self.size = size
        self.nextAccess = nextAccess
    }
}

/// EvictionPolicy decides which objects a cache of `capacity` keeps. It holds metadata only; the cache (or
/// the simulator) holds the data, and learns of evictions through ``evictionHandler``.
///
/// The contract follows libCacheSim's `get`: ``lookup(_:)`` answers whether the object is resident and, if so,
/// records the hit; on a miss the caller calls ``admit(_:)``, which does what the policy does on a miss
/// (ghost hits, adaptation), evicts until the object fits, and inserts it (unless the policy declines: an object
/// larger than the capacity or than a policy's admission queue is never inserted). ``access(_:)`` is both.
/// The occupied size never exceeds the capacity after ``admit(_:)`` returns.
///
/// A policy is not thread-safe: the cache shards and locks around it; the simulator owns it.
public protocol EvictionPolicy: AnyObject {
    /// The policy's name in the registry (`lru`, `s3fifo`, ...).
    var name: String { get }
    /// The capacity, in the units of ``CacheRequest/size``.
    var capacity: Int64 { get }
    /// The sum of the sizes of the resident objects.
    var occupied: Int64 { get }
    /// The number of resident objects.
    var residentCount: Int { get }
    /// Called with the ID of every resident object the policy evicts (not for ghost entries).
    var evictionHandler: ((UInt64) -> Void)? { get set }

    /// Whether `request.id` is resident; a hit updates the policy's state.
    func lookup(_ request: CacheRequest) -> Bool
    /// Handles a miss: makes room and inserts `request` (or declines to).
    func admit(_ request: CacheRequest)
    /// Drops an object (resident or ghost); returns whether it was resident.
    @discardableResult
    func remove(_ id: UInt64) -> Bool
}

/// ReaderAware is what a policy implements to use what the node knows of its readers: where each reader of a
/// segment is and whether it follows the tail or scans history (catch-up). Policies that do not implement it
/// (every generic one) are unaffected; the cache calls these under the shard's lock, like the other methods.
public protocol ReaderAware: AnyObject {
    /// `reader` read block `block` of segment ordinal `segment`; `tail` when it follows the segment's tail.
    func readerMoved(_ reader: Int, segment: UInt32, block: UInt64, tail: Bool)
    /// `reader` is gone (its connection closed).
    func readerLeft(_ reader: Int)
}

extension EvictionPolicy {
    /// One request, as the simulator replays it: a hit, or a miss followed by ``admit(_:)``.
    /// - Returns: whether it was a hit.
    @inline(__always)
    public func access(_ request: CacheRequest) -> Bool {
        if lookup(request) { return true }
        admit(request)
        return false
    }
}

/// PolicyBase holds what every list-based policy has: the node store, the ID index, capacity and the
/// eviction handler.
open class PolicyBase {
    public let capacity: Int64
    public var evictionHandler: ((UInt64) -> Void)?
    let nodes: NodeStore
    let index: IDMap
    /// Sum of the sizes of resident objects; policies with ghost lists keep ghosts out of it.
    var used: Int64 = 0
    var resident = 0

    /// `objectSize` is the typical weight of an object (1 when counting objects, a block's bytes in the block
    /// cache): the tables start sized for `capacity / objectSize` objects, at most 65536, and grow as needed.
    init(capacity: Int64, objectSize: Int64 = 1) {
        self.capacity = capacity
        let expected = Int(min(capacity / max(1, objectSize), 1 << 16))
        nodes = NodeStore(capacity: max(1024, expected))
        index = IDMap(capacity: max(1024, expected))
    }

    public var occupied: Int64 { used }
    public var residentCount: Int { resident }

    /// Registers a new resident node for `request` and returns it (on no list).
    @inline(__always)
    func newResident(_ request: CacheRequest) -> Int32 {
        let n = nodes.allocate(id: request.id, size: request.size)
        index.set(request.id, n)
        used += request.size
        resident += 1
        return n
    }

    /// The `remove` of policies whose resident objects sit on one list each, with no ghosts.
    func removeResident(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        nodes.unlink(n)
        dropResident(n, report: false)
        return true
    }

    /// Evicts the oldest object of list 0 until `request` fits, then puts it at the head of list 0: the whole
    /// `admit` of LRU and FIFO.
    func admitAtHead(_ request: CacheRequest) {
        guard request.size <= capacity else { return }
        while used + request.size > capacity {
            let victim = nodes.tail[0]
            nodes.unlink(victim)
            dropResident(victim)
        }
        nodes.pushHead(newResident(request), 0)
    }

    /// Remembers an evicted object's ID at the head of ghost list `l`, a FIFO bounded to `limit` (its oldest
    /// entries go first); an object larger than the limit is not remembered.
    func rememberGhost(_ id: UInt64, size: Int64, list l: Int, limit: Int64) {
        guard size <= limit else { return }
        while nodes.bytes[l] + size > limit { dropGhost(nodes.tail[l]) }
        let n = nodes.allocate(id: id, size: size)
        index.set(id, n)
        nodes.pushHead(n, l)
    }

    /// Forgets ghost node `n`: off its list, out of the index, freed.
    func dropGhost(_ n: Int32) {
        nodes.unlink(n)
        index.remove(nodes.id[Int(n)])
        nodes.free(n)
    }

    /// Forgets resident node `n` (already off its list) and reports its eviction.
    @inline(__always)
    func dropResident(_ n: Int32, report: Bool = true) {
        let id = nodes.id[Int(n)]
        used -= nodes.size[Int(n)]
        resident -= 1
        index.remove(id)
        nodes.free(n)
        if report, let handler = evictionHandler { handler(id) }
    }
}
