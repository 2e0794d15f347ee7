/// LIRS: low inter-reference recency set.
///
/// Jiang and Zhang, "LIRS: An Efficient Low Inter-reference Recency Set Replacement Policy to Improve Buffer
/// Cache Performance", SIGMETRICS 2002; semantics as in libCacheSim's `LIRS` (stacks S, Q and a list of
/// non-resident HIR entries, resident HIR share max(1, 1 % of the capacity)). Objects with a short reuse distance
/// (LIR) stay; the rest (HIR) pass through a small queue Q. S records recency for both and is pruned so its
/// bottom is always LIR; a HIR object hit while still in S becomes LIR and the bottom LIR object is demoted.
/// Pick it for loops and scans larger than the cache, where LRU fails completely.
public final class LIRS: EvictionPolicy {
    static let lir: Int32 = 1
    static let inCache: Int32 = 2

    public let capacity: Int64
    public var evictionHandler: ((UInt64) -> Void)?
    let hirLimit: Int64
    let lirLimit: Int64
    private var hirCount: Int64 = 0
    private var lirCount: Int64 = 0
    private var nonresident: Int64 = 0
    private var used: Int64 = 0
    private var resident = 0
    private let s = IndexedList()
    private let q = IndexedList()
    private let nh = IndexedList()
    /// How many hits on a resident HIR object in Q evicted that object from Q while making room for it in S. Here
    /// libCacheSim's `hit_RD_HIRinQ` goes on reading the object's size after `evictLIR` freed it, so it sees the
    /// size of whatever object reused the memory; Eddy keeps using the object's size. These are the only requests
    /// where the two can part (docs/eviction.md), and they are rare: a few per million on a Zipf trace with
    /// log-normal sizes and a cache of about 500 average objects.
    public private(set) var freedSizeReads = 0
    private var records: RecordReuseModel?

    /// Creates a LIRS of `capacity` whose resident HIR share is `hirRatio` (at least one unit).
    public init(capacity: Int64, hirRatio: Double = 0.01) {
        self.capacity = capacity
        hirLimit = max(1, Int64(hirRatio * Double(capacity)))
        lirLimit = capacity - hirLimit
    }

    /// Makes this LIRS read the freed object's size as libCacheSim does (a model of malloc's reuse of freed
    /// objects, ``RecordReuseModel``): only for the test that compares it with libCacheSim request for request.
    func reproduceLibCacheSimFreedSizeRead() {
        let model = RecordReuseModel()
        records = model
        for list in [s, q, nh] { list.records = model }
    }

    public var name: String { "lirs" }
    public var occupied: Int64 { used }
    public var residentCount: Int { resident }

    private func isLIR(_ n: Int32) -> Bool { s.nodes.a[Int(n)] & Self.lir != 0 }
    private func isResident(_ list: IndexedList, _ n: Int32) -> Bool { list.nodes.a[Int(n)] & Self.inCache != 0 }

    public func lookup(_ request: CacheRequest) -> Bool {
        let inS = s.find(request.id)
        let inQ = q.find(request.id)
        if let inS { s.moveToHead(inS) }
        if let inQ { q.moveToHead(inQ) }
        var hit = false
        if let inS {
            if isLIR(inS) {
                prune()
                hit = true
            } else if isResident(s, inS) {
                hitResidentHIRInS(inS, inQ)
                hit = true
            }
        } else if let inQ, isResident(q, inQ) {
            hitResidentHIRInQ(inQ)
            hit = true
        }
        if hit { limitStack() }
        return hit
    }

    public func admit(_ request: CacheRequest) {
        defer { limitStack() }
        guard canInsert(request) else { return }
        var guardRounds = 0
        while used + request.size > capacity {
            let before = used
            evict(request)
            if used == before {
                guardRounds += 1
                if guardRounds > 2 { return }  // nothing left to evict: decline rather than overfill
            }
        }
        insert(request)
    }

    private func canInsert(_ r: CacheRequest) -> Bool {
        guard r.size <= capacity else { return false }
        let inS = s.find(r.id)
        let inQ = q.find(r.id)
        if let inS, !isLIR(inS), !isResident(s, inS) {
            let size = s.size(inS)
            while lirCount + size > lirLimit && !s.isEmpty { evictLIR() }
            if nh.remove(r.id) { nonresident -= size }
            return true
        }
        if inS == nil && inQ == nil {
            if r.size > lirLimit || r.size > hirLimit { return false }
            if lirCount + r.size > lirLimit && hirCount + r.size > hirLimit {
                while hirCount + r.size > hirLimit && !q.isEmpty { evictHIR() }
            }
            return true
        }
        return false
    }

    private func evict(_ r: CacheRequest) {
        let inS = s.find(r.id)
        let inQ = q.find(r.id)
        if let inS, !isLIR(inS), !isResident(s, inS) {
            while hirCount >= hirLimit && !q.isEmpty { evictHIR() }
            if !s.isEmpty { evictLIR() }
        }
        if inS == nil, let inQ, !isResident(q, inQ) {
            while hirCount >= hirLimit && !q.isEmpty { evictHIR() }
        }
        if inS == nil && inQ == nil && lirCount + r.size > lirLimit && hirCount + r.size > hirLimit && !q.isEmpty {
            evictHIR()
        }
    }

    private func insert(_ r: CacheRequest) {
        let inS = s.find(r.id)
        let inQ = q.find(r.id)
        if let inS, !isLIR(inS), !isResident(s, inS) {
            s.nodes.a[Int(inS)] = Self.lir | Self.inCache
            let size = s.size(inS)
            lirCount += size
            used += size
            resident += 1
        }
        if inS == nil, let inQ, !isResident(q, inQ) {
            s.insertHead(r.id, r.size, flags: Self.inCache)
            q.nodes.a[Int(inQ)] = Self.inCache
            hirCount += r.size
            used += r.size
            resident += 1
        }
        if inS == nil && inQ == nil {
            if lirCount + r.size <= lirLimit {
                s.insertHead(r.id, r.size, flags: Self.lir | Self.inCache)
                lirCount += r.size
            } else {
                s.insertHead(r.id, r.size, flags: Self.inCache)
                q.insertHead(r.id, r.size, flags: Self.inCache)
                hirCount += r.size
            }
            used += r.size
            resident += 1
        }
    }

    /// Removes HIR entries from the bottom of S until an LIR entry is at the bottom.
    private func prune() {
        var t = s.tail
        while t != s.head {
            if isLIR(t) { break }
            let id = s.id(t)
            if !isResident(s, t) && nh.remove(id) { nonresident -= s.size(t) }
            s.remove(id)
            t = s.tail
        }
    }

    private func hitResidentHIRInS(_ inS: Int32, _ inQ: Int32?) {
        if let inQ {
            let size = q.size(inQ)
            hirCount -= size
            q.remove(q.id(inQ))
            used -= size
            resident -= 1
        }
        let size = s.size(inS)
        while lirCount + size > lirLimit && s.tail != inS { evictLIR() }
        s.nodes.a[Int(inS)] |= Self.lir
        lirCount += size
        used += size
        resident += 1
    }

    /// A hit on a resident HIR object that is in Q but no longer in S: it goes back on top of S, as HIR. Making room
    /// for it among the LIR share may demote enough LIR objects into Q to push the object itself out of Q; it then
    /// stays resident through its S entry until that is demoted or pruned, as in libCacheSim.
    private func hitResidentHIRInQ(_ inQ: Int32) {
        let id = q.id(inQ)
        let size = q.size(inQ)
        let record = records?.record(q, id)
        func sizeRead() -> Int64 {
            guard let records, let record else { return size }
            return records.size(of: record)
        }
        while lirCount + sizeRead() > lirLimit && !s.isEmpty { evictLIR() }
        if q.find(id) == nil { freedSizeReads += 1 }
        s.insertHead(id, size, flags: Self.inCache)
    }

    /// Demotes the LIR entry at the bottom of S to a resident HIR entry in Q (or evicts it when it cannot fit Q).
    private func evictLIR() {
        let t = s.tail
        let id = s.id(t)
        let size = s.size(t)
        lirCount -= size
        s.remove(id)
        used -= size
        resident -= 1
        if size <= hirLimit {
            while hirCount + size > hirLimit && !q.isEmpty { evictHIR() }
            q.insertHead(id, size, flags: Self.inCache)
            hirCount += size
            used += size
            resident += 1
        } else {
            evictionHandler?(id)
        }
        prune()
    }

    /// Evicts the resident HIR entry at the front of Q; its S entry, if any, becomes non-resident.
    private func evictHIR() {
        let t = q.tail
        let id = q.id(t)
        let size = q.size(t)
        hirCount -= size
        q.remove(id)
        if let inS = s.find(id) {
            s.nodes.a[Int(inS)] &= ~Self.inCache
            nh.insertHead(id, size)
            nonresident += s.size(inS)
        }
        used -= size
        resident -= 1
        evictionHandler?(id)
    }

    /// Bounds S to twice the capacity by dropping the oldest non-resident entries.
    private func limitStack() {
        while s.bytes > 2 * capacity {
            let t = nh.tail
            guard t != NodeStore.none else { break }
            let id = nh.id(t)
            nonresident -= nh.size(t)
            s.remove(id)
            nh.remove(id)
        }
    }

    @discardableResult
    public func remove(_ id: UInt64) -> Bool {
        var wasResident = false
        if let inS = s.find(id) {
            let size = s.size(inS)
            let lir = isLIR(inS)
            if lir {
                lirCount -= size
                wasResident = true
            } else if isResident(s, inS) {
                hirCount -= size
                wasResident = true
                q.remove(id)
            } else if nh.remove(id) {
                nonresident -= size
            }
            s.remove(id)
            if lir { prune() }
        } else if let inQ = q.find(id) {
            hirCount -= q.size(inQ)
            q.remove(id)
            wasResident = true
        }
        if wasResident {
            resident -= 1
            used = lirCount + hirCount
        }
        return wasResident
    }
}
