/// S3-FIFO: a small FIFO for new objects, a main FIFO with reinsertion, and a ghost FIFO of recent evictees.
///
/// Yang et al., "FIFO queues are all you need for cache eviction", SOSP 2023; semantics as in libCacheSim's
/// `S3FIFO`. New objects enter the small queue (10 % of the capacity) with frequency 0, or the main queue if
/// their ID is in the ghost queue (90 %). A hit adds one to the frequency. Evicting from the small queue moves
/// an object with frequency >= `moveToMainThreshold` (2) to the main queue, else drops it into the ghost queue.
/// The main queue reinserts objects with frequency > 0, decrementing it (a 2-bit CLOCK); it is evicted from when
/// it is over its share or the small queue is empty. One-hit wonders leave quickly through the small queue,
/// which is why S3-FIFO does well on web and block traces with scans.
public final class S3FIFO: PolicyBase, EvictionPolicy {
    static let small = 0
    static let main = 1
    static let ghost = 2

    /// The small queue's share of the capacity.
    public let smallRatio: Double
    /// The ghost queue's size as a share of the capacity.
    public let ghostRatio: Double
    /// Hits an object needs in the small queue to move to the main queue.
    public let moveToMainThreshold: Int32
    let smallCapacity: Int64
    let mainCapacity: Int64
    let ghostCapacity: Int64

    /// Creates an S3-FIFO of `capacity` with the paper's defaults (10 % small, 90 % ghost, threshold 2).
    public init(
        capacity: Int64, smallRatio: Double = 0.10, ghostRatio: Double = 0.90, moveToMainThreshold: Int32 = 2,
        objectSize: Int64 = 1
    ) {
        self.smallRatio = smallRatio
        self.ghostRatio = ghostRatio
        self.moveToMainThreshold = moveToMainThreshold
        smallCapacity = Int64(Double(capacity) * smallRatio)
        mainCapacity = capacity - smallCapacity
        ghostCapacity = Int64(Double(capacity) * ghostRatio)
        super.init(capacity: capacity, objectSize: objectSize)
    }

    public var name: String { "s3fifo" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id), nodes.list[Int(n)] != Int8(Self.ghost) else { return false }
        nodes.a[Int(n)] += 1
        return true
    }

    public func admit(_ request: CacheRequest) {
        var ghostHit = false
        if let n = index.get(request.id) {  // a miss that is in the index is a ghost entry
            dropGhost(n)
            ghostHit = true
        }
        guard request.size <= smallCapacity, request.size <= capacity else { return }
        while used + request.size > capacity { evict() }
        if !ghostHit && request.size >= smallCapacity { return }
        let n = newResident(request)
        nodes.pushHead(n, ghostHit ? Self.main : Self.small)
    }

    private func evict() {
        if nodes.bytes[Self.main] > mainCapacity || nodes.bytes[Self.small] == 0 {
            evictMain()
        } else {
            evictSmall()
        }
    }

    private func evictSmall() {
        while nodes.bytes[Self.small] > 0 {
            let n = nodes.tail[Self.small]
            nodes.unlink(n)
            if nodes.a[Int(n)] >= moveToMainThreshold {
                nodes.a[Int(n)] = 0
                nodes.pushHead(n, Self.main)
            } else {
                let id = nodes.id[Int(n)]
                let size = nodes.size[Int(n)]
                dropResident(n)
                rememberGhost(id, size: size, list: Self.ghost, limit: ghostCapacity)
                return
            }
        }
    }

    private func evictMain() {
        while nodes.bytes[Self.main] > 0 {
            let n = nodes.tail[Self.main]
            let frequency = nodes.a[Int(n)]
            if frequency >= 1 {
                nodes.a[Int(n)] = min(frequency, 3) - 1
                nodes.moveToHead(n, Self.main)
            } else {
                nodes.unlink(n)
                dropResident(n)
                return
            }
        }
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        let wasResident = nodes.list[Int(n)] != Int8(Self.ghost)
        nodes.unlink(n)
        if wasResident {
            dropResident(n, report: false)
        } else {
            index.remove(id)
            nodes.free(n)
        }
        return wasResident
    }
}
