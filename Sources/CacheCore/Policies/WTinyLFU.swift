/// W-TinyLFU: a small window LRU in front of a segmented LRU, with a frequency sketch deciding admission.
///
/// Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", ACM ToS 2017 (the
/// design of Caffeine); semantics as in libCacheSim's `WTinyLFU`: a static window of floor(1 % of the
/// capacity), a main SLRU (probation:protected = 1:4), and a counting sketch sized for the main cache
/// (error 0.001) that halves after 32 x main-size hits in the main cache. When the main cache is full, the
/// window's victim is admitted only if its estimated frequency is strictly greater than the main victim's.
/// Pick it for workloads with a stable popular set and bursts of one-time traffic (the best general choice in
/// Caffeine's experience). The sketch hashes as libCacheSim's does (`CountingSketch`), so results are libCacheSim's
/// (0.3.5) request for request (docs/eviction.md).
public final class WTinyLFU: PolicyBase, EvictionPolicy {
    static let window = 0
    static let probation = 1
    static let protected = 2

    let windowCapacity: Int64
    let mainCapacity: Int64
    let segmentCapacity: (probation: Int64, protected: Int64)
    private var mainUsed: Int64 = 0
    private let sketch: CountingSketch
    private var hitsSinceDecay = 0
    private let decayPeriod: Int

    /// Creates a W-TinyLFU of `capacity` with a window of `windowRatio` of it.
    public init(capacity: Int64, windowRatio: Double = 0.01, objectSize: Int64 = 1) {
        windowCapacity = Int64(Double(capacity) * windowRatio)
        mainCapacity = capacity - windowCapacity
        segmentCapacity = (Int64(1.0 / 5.0 * Double(mainCapacity)), Int64(4.0 / 5.0 * Double(mainCapacity)))
        // The sketch counts objects: a main cache of bytes holds mainCapacity / objectSize of them.
        let mainObjects = max(1, mainCapacity / max(1, objectSize))
        sketch = CountingSketch(entries: Int(mainObjects), error: 0.001)
        decayPeriod = Int(32 * mainObjects)
        super.init(capacity: capacity, objectSize: objectSize)
    }

    public var name: String { "wtinylfu" }

    public func lookup(_ request: CacheRequest) -> Bool {
        guard let n = index.get(request.id) else { return false }
        if Int(nodes.list[Int(n)]) == Self.window {
            nodes.moveToHead(n, Self.window)
            return true
        }
        promote(n)
        sketch.add(request.id)
        hitsSinceDecay += 1
        if hitsSinceDecay >= decayPeriod {
            hitsSinceDecay = 0
            sketch.halve()
        }
        return true
    }

    public func admit(_ request: CacheRequest) {
        guard request.size <= capacity, request.size <= windowCapacity, request.size <= mainCapacity,
            request.size <= segmentCapacity.probation
        else { return }
        while used + request.size > capacity { evict() }
        nodes.pushHead(newResident(request), Self.window)
        sketch.add(request.id)
    }

    /// One eviction round: drain window victims into the main cache while it has room; then let the window
    /// victim and the main victim compete on estimated frequency; the loser leaves.
    private func evict() {
        while true {
            let w = nodes.tail[Self.window]
            guard w != NodeStore.none else {
                evictMain()
                return
            }
            let id = nodes.id[Int(w)]
            if mainUsed + nodes.size[Int(w)] <= mainCapacity {
                nodes.unlink(w)
                insertMain(w)
                sketch.add(id)
                continue
            }
            let m = mainVictim()
            if sketch.estimate(id) > sketch.estimate(nodes.id[Int(m)]) {
                evictMain()
                nodes.unlink(w)
                insertMain(w)
            } else {
                nodes.unlink(w)
                dropResident(w)
            }
            sketch.add(id)
            return
        }
    }

    private func mainVictim() -> Int32 {
        nodes.count[Self.probation] > 0 ? nodes.tail[Self.probation] : nodes.tail[Self.protected]
    }

    private func evictMain() {
        let m = mainVictim()
        guard m != NodeStore.none else { return }
        mainUsed -= nodes.size[Int(m)]
        nodes.unlink(m)
        dropResident(m)
    }

    /// SLRU insert: the lowest segment with room, else make room and use probation.
    private func insertMain(_ n: Int32) {
        let size = nodes.size[Int(n)]
        var segment = Self.probation
        if nodes.bytes[Self.probation] + size <= segmentCapacity.probation {
            segment = Self.probation
        } else if nodes.bytes[Self.protected] + size <= segmentCapacity.protected {
            segment = Self.protected
        } else {
            while mainUsed + size > mainCapacity { evictMain() }
        }
        nodes.pushHead(n, segment)
        mainUsed += size
    }

    /// SLRU hit: move to the protected segment's head, demoting its overflow back to probation.
    private func promote(_ n: Int32) {
        if Int(nodes.list[Int(n)]) == Self.protected {
            nodes.moveToHead(n, Self.protected)
            return
        }
        nodes.moveToHead(n, Self.protected)
        while nodes.bytes[Self.protected] > segmentCapacity.protected {
            let t = nodes.tail[Self.protected]
            nodes.moveToHead(t, Self.probation)
            while nodes.bytes[Self.probation] > segmentCapacity.probation { evictMain() }
        }
    }

    public func remove(_ id: UInt64) -> Bool {
        guard let n = index.get(id) else { return false }
        if Int(nodes.list[Int(n)]) != Self.window { mainUsed -= nodes.size[Int(n)] }
        nodes.unlink(n)
        dropResident(n, report: false)
        return true
    }
}
