import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// StreamAware: Eddy's own policy, built on what only a stream cache knows.
///
/// Blocks are (segment, index) pairs of append-only segments (``BlockKey``), and readers come in two kinds:
/// tail readers that follow a segment's head, and catch-up readers that start somewhere behind the head and
/// scan block by block up to it. From the block keys alone the policy keeps a model of each segment: its head
/// (the highest block seen), the cursors of the scans in progress (a read of block b right after b-1 moves a
/// cursor; a read deep in history that continues no cursor starts one), how often scans start in it, and,
/// across segments, how deep behind the head scans start.
///
/// With that model it estimates, Belady-style, how long until each block is read again:
/// - **tail blocks** (within `tailWindow` of the head) are read by every tail reader right away: they live in a
///   protected LRU list and go last, so a catch-up scan never flushes the hot tail;
/// - a history block **ahead of a scan in progress** is read when that cursor gets there: (b - c) x the time a
///   cursor takes per block;
/// - a history block **no scan is heading for** is read when a new scan starts in its segment deep enough to
///   cover it: 1 / (scan start rate of the segment x P(start depth >= head - b));
/// - a block deeper than any scan starts, with no cursor behind it, is never read again.
/// Eviction samples `sample` history blocks at random (as Redis samples keys) and evicts the one whose next read
/// is furthest away (a dead block at once); the least recently read history block and the least recently read
/// tail blocks are always among the candidates. When fewer than half of the reads fit the model (tail reads and
/// scan steps), the trace is not a stream workload and history is evicted in LRU order.
///
/// Each eviction follows one of two experts, drawn by weight: the model's choice or the least recently read
/// history block. Misses on blocks an expert evicted lower its weight (LeCaR's regret minimisation), so where the
/// model misjudges a workload recency takes over.
///
/// In a node the policy also gets **reader hints** (``ReaderAware``): where each reader of a segment is and
/// whether it is a tail or a catch-up reader. They replace guesswork for the segments they cover: a history block
/// behind every reader of its segment will not be read by any of them (only a new scan could), so it goes first;
/// a block ahead of a catch-up reader is read when that reader gets there, (b - position) steps away, so the
/// blocks just ahead of a scan are kept.
public final class StreamAware: PolicyBase, EvictionPolicy, ReaderAware {
    static let tail = 0
    static let history = 1

    /// Blocks at most this far behind the head count as tail blocks.
    public let tailWindow: UInt64
    /// Cursors remembered per segment (the most recently moved are kept).
    public let maxCursors: Int
    /// History blocks examined per eviction.
    public let sample: Int
    /// Requests after which a cursor that has not moved is forgotten.
    public let cursorIdleLimit: Int64
    /// Requests between halvings of the scan-start statistics, so the model follows a changing workload.
    public let agingPeriod: Int64

    final class SegmentModel {
        var head: UInt64 = 0
        var cursors: [UInt64] = []
        var lastMoved: [Int64] = []
        /// Scans started here since the last aging (halved each period).
        var starts: Double = 0
        /// Reads within the tail window since the last aging (halved each period): the tail readers' demand.
        var tailReads: Double = 0
    }

    private var segments: [UInt32: SegmentModel] = [:]
    /// Reader hints: per segment, each reader's block, kind and when it was last heard of.
    private var readers: [UInt32: [Int: (block: UInt64, tail: Bool, at: Int64)]] = [:]
    /// Segments each reader is in, so a reader that leaves is removed everywhere.
    private var readerSegments: [Int: Set<UInt32>] = [:]
    private var clock: Int64 = 0
    private var random = SeededRandom(seed: 0x5EED)
    private var periodStart: Int64 = 0
    /// Mean requests between two moves of one cursor (exponential average).
    private var stepInterval: Double = 100
    /// Start depths in buckets of `depthBucket` blocks; `depthTail[i]` = share of starts at depth >= bucket i.
    private static let depthBucket: UInt64 = 8
    private var depthCounts = [Double](repeating: 0, count: 2048)
    private var depthTail = [Double](repeating: 0.5, count: 2048)
    private var startsSinceRefresh = 0
    private var totalStarts: Double = 0
    /// Reads that fit the stream model (tail reads and scan steps) and all reads, halved each period: when
    /// few reads fit, the workload is not a stream workload and eviction falls back to LRU.
    private var structuredReads: Double = 0
    private var allReads: Double = 0

    /// Regret minimisation between two experts (LeCaR: Vietri et al., HotStorage 2018): the model's choice and
    /// plain LRU over the history list. Each eviction follows one expert, drawn by weight; the evicted block is
    /// remembered as that expert's ghost, and a miss on a ghost lowers its expert's weight by a reward that
    /// decays with the time since the eviction. So where the model misjudges a workload (in small caches, blocks
    /// just behind the head that trailing readers and shallow scans read again), recency takes over.
    private var modelWeight = 0.5
    private var ghosts: [UInt64: (byModel: Bool, at: Int64)] = [:]
    /// The evictions in order (from `ghostStart`), to forget the oldest ghosts.
    private var ghostOrder: [(id: UInt64, at: Int64)] = []
    private var ghostStart = 0
    /// The learning rate of the weights (LeCaR's value).
    private static let learningRate = 0.45

    /// Creates the policy; the defaults suit 1 MiB blocks.
    public init(
        capacity: Int64, tailWindow: UInt64 = 2, maxCursors: Int = 16, sample: Int = 16,
        cursorIdleLimit: Int64 = 200_000, agingPeriod: Int64 = 1_000_000, objectSize: Int64 = 1
    ) {
        self.tailWindow = tailWindow
        self.maxCursors = maxCursors
        self.sample = sample
        self.cursorIdleLimit = cursorIdleLimit
        self.agingPeriod = agingPeriod
        super.init(capacity: capacity, objectSize: objectSize)
    }

    public var name: String { "stream" }

    // MARK: - The segment model

    @inline(__always)
    private func model(_ segment: UInt32) -> SegmentModel {
        if let m = segments[segment] { return m }
        let m = SegmentModel()
        segments[segment] = m
        return m
    }

    /// Updates the model with one read of `key`.
    private func observe(_ key: BlockKey) {
        clock += 1
        if clock - periodStart >= agingPeriod { age() }
        let m = model(key.segment)
        let b = key.block
        if b > m.head {
            demoteAgedTail(segment: key.segment, from: m.head, to: b)
            m.head = b
        }
        allReads += 1
        if b + tailWindow >= m.head {
            m.tailReads += 1
            structuredReads += 1
        }
        if let i = m.cursors.firstIndex(where: { $0 + 1 == b || $0 == b }) {
            if b + tailWindow < m.head { structuredReads += 1 }
            if m.cursors[i] + 1 == b {
                stepInterval = 0.99 * stepInterval + 0.01 * Double(clock - m.lastMoved[i])
            }
            m.cursors[i] = b
            m.lastMoved[i] = clock
        } else if b + tailWindow < m.head {
            // A read into history that continues no scan: a scan starts here.
            m.starts += 1
            recordDepth(m.head - b)
            if m.cursors.count < maxCursors {
                m.cursors.append(b)
                m.lastMoved.append(clock)
            } else if let oldest = m.lastMoved.indices.min(by: { m.lastMoved[$0] < m.lastMoved[$1] }) {
                m.cursors[oldest] = b
                m.lastMoved[oldest] = clock
            }
        }
        // A cursor that reached the tail became a tail reader; one that stopped moving is gone.
        var i = 0
        while i < m.cursors.count {
            if m.cursors[i] + tailWindow >= m.head || clock - m.lastMoved[i] > cursorIdleLimit {
                m.cursors.swapAt(i, m.cursors.count - 1)
                m.lastMoved.swapAt(i, m.lastMoved.count - 1)
                m.cursors.removeLast()
                m.lastMoved.removeLast()
            } else {
                i += 1
            }
        }
    }

    /// The head of `segment` moved from `old` to `new`: its blocks that fell out of the tail window move to the
    /// head of the history list.
    private func demoteAgedTail(segment: UInt32, from old: UInt64, to new: UInt64) {
        let first = old > tailWindow ? old - tailWindow : 0
        let end = new > tailWindow ? new - tailWindow : 0
        guard first < end else { return }
        for b in first..<min(end, first + 64) {
            let id = BlockKey(segment: segment, block: b).rawValue
            if let n = index.get(id), Int(nodes.list[Int(n)]) == Self.tail { nodes.moveToHead(n, Self.history) }
        }
    }

    private func recordDepth(_ depth: UInt64) {
        let bucket = Int(min(depth / Self.depthBucket, UInt64(depthCounts.count - 1)))
        depthCounts[bucket] += 1
        totalStarts += 1
        startsSinceRefresh += 1
        if startsSinceRefresh >= 64 || totalStarts < 64 { refreshDepthTail() }
    }

    private func refreshDepthTail() {
        startsSinceRefresh = 0
        guard totalStarts > 0 else { return }
        // Smoothed with half a pseudo-start, so depths never seen yet are unlikely, not impossible.
        var acc = 0.0
        for i in stride(from: depthCounts.count - 1, through: 0, by: -1) {
            acc += depthCounts[i]
            depthTail[i] = (acc + 0.5) / (totalStarts + 1)
        }
    }

    private func age() {
        periodStart = clock
        for m in segments.values {
            m.starts /= 2
            m.tailReads /= 2
        }
        for i in depthCounts.indices { depthCounts[i] /= 2 }
        totalStarts /= 2
        structuredReads /= 2
        allReads /= 2
        refreshDepthTail()
    }

    @inline(__always)
    private func isTail(_ key: BlockKey) -> Bool {
        guard let m = segments[key.segment] else { return true }
        return key.block + tailWindow >= m.head
    }

    public func readerMoved(_ reader: Int, segment: UInt32, block: UInt64, tail: Bool) {
        readers[segment, default: [:]][reader] = (block, tail, clock)
        readerSegments[reader, default: []].insert(segment)
    }

    public func readerLeft(_ reader: Int) {
        for segment in readerSegments.removeValue(forKey: reader) ?? [] {
            readers[segment]?.removeValue(forKey: reader)
            if readers[segment]?.isEmpty == true { readers.removeValue(forKey: segment) }
        }
    }

    /// What the hints say of history block `b` of a segment: the steps until the nearest catch-up reader behind
    /// it gets there, `.infinity` when every live reader is past it, or nil when the segment has no live hints.
    /// Also the position of the furthest-behind catch-up reader (nil when there is none).
    private func hintedTime(_ segment: UInt32, _ b: UInt64) -> (time: Double, slowest: UInt64?)? {
        guard let hinted = readers[segment] else { return nil }
        var nearest = UInt64.max
        var slowest: UInt64?
        var anyLive = false
        for (_, r) in hinted where clock - r.at <= cursorIdleLimit {
            anyLive = true
            guard !r.tail else { continue }
            slowest = min(slowest ?? r.block, r.block)
            if r.block <= b { nearest = min(nearest, b - r.block) }
        }
        guard anyLive else { return nil }
        return (nearest == .max ? .infinity : Double(nearest) * stepInterval, slowest)
    }

    /// Estimated requests until `key` is read again (`.infinity` for never).
    private func timeToNextRead(_ key: BlockKey) -> Double {
        guard let m = segments[key.segment] else { return .infinity }
        let b = key.block
        // Counts are halved every period, so they cover the current period plus about one period of the past.
        let window = Double(max(1, clock - periodStart + (periodStart > 0 ? agingPeriod : 0)))
        if b + tailWindow >= m.head { return window / (m.tailReads + 0.1) }
        var nearest = UInt64.max
        for (i, c) in m.cursors.enumerated() where c < b && clock - m.lastMoved[i] <= cursorIdleLimit {
            nearest = min(nearest, b - c)
        }
        let byCursor = nearest == .max ? Double.infinity : Double(nearest) * stepInterval
        if let hinted = hintedTime(key.segment, b) {
            // The node says where its readers are: that beats the inferred cursors.
            if hinted.time.isFinite { return min(hinted.time, byCursor) }
            // Behind every reader: only a new scan reads it again. It goes before any block a known reader is
            // heading for, all of which are read by the time the slowest catch-up reader reaches the head.
            let depth = m.head > b ? m.head - b : 0
            let bucket = Int(min(depth / Self.depthBucket, UInt64(depthTail.count - 1)))
            let window = Double(max(1, clock - periodStart + (periodStart > 0 ? agingPeriod : 0)))
            let coverage = (m.starts + 0.1) / window * depthTail[bucket]
            let lap = Double(m.head - min(hinted.slowest ?? m.head, m.head) + 1) * stepInterval
            return lap + (coverage > 0 ? 1 / coverage : .infinity)
        }
        let depth = m.head > b ? m.head - b : 0
        let bucket = Int(min(depth / Self.depthBucket, UInt64(depthTail.count - 1)))
        let startRate = (m.starts + 0.1) / window
        let coverage = startRate * depthTail[bucket]
        let byNewScan = coverage > 0 ? 1 / coverage : Double.infinity
        return min(byCursor, byNewScan)
    }

    // MARK: - EvictionPolicy

    public func lookup(_ request: CacheRequest) -> Bool {
        let key = BlockKey(rawValue: request.id)
        observe(key)
        guard let n = index.get(request.id) else { return false }
        nodes.moveToHead(n, isTail(key) ? Self.tail : Self.history)
        return true
    }

    public func admit(_ request: CacheRequest) {
        if let ghost = ghosts.removeValue(forKey: request.id) { regret(ghost) }
        guard request.size <= capacity else { return }
        while used + request.size > capacity { evictOne() }
        let n = newResident(request)
        nodes.pushHead(n, isTail(BlockKey(rawValue: request.id)) ? Self.tail : Self.history)
    }

    private func evictOne() {
        // Candidates: the least recently read tail blocks, the least recently read history block, and random
        // history blocks; the one whose next read is furthest away goes.
        var victim = NodeStore.none
        var worst = -1.0
        func consider(_ n: Int32) {
            let t = timeToNextRead(BlockKey(rawValue: nodes.id[Int(n)]))
            if t > worst {
                worst = t
                victim = n
            }
        }
        var t = nodes.tail[Self.tail]
        for _ in 0..<4 where t != NodeStore.none {
            consider(t)
            t = nodes.prev[Int(t)]
        }
        if nodes.count[Self.history] > 0 && structuredReads < 0.5 * allReads {
            // Not a stream workload: plain LRU over the history list.
            let n = nodes.tail[Self.history]
            nodes.unlink(n)
            dropResident(n)
            return
        }
        if nodes.count[Self.history] > 0 {
            let lru = nodes.tail[Self.history]
            consider(lru)
            var tries = 0
            var examined = 1
            let slots = UInt64(nodes.allocated)
            while worst != .infinity && examined < sample && tries < sample * 8 {
                tries += 1
                let n = Int32(truncatingIfNeeded: random.next() % slots)
                guard Int(nodes.list[Int(n)]) == Self.history else { continue }
                examined += 1
                consider(n)
            }
            // A choice made on reader hints is the node's knowledge, not a guess: it is followed.
            let key = BlockKey(rawValue: nodes.id[Int(victim)])
            let hinted = !readers.isEmpty && hintedTime(key.segment, key.block) != nil
            if victim != lru && !hinted && random.unit() >= modelWeight {
                victim = lru
                remember(nodes.id[Int(victim)], byModel: false)
            } else {
                remember(nodes.id[Int(victim)], byModel: true)
            }
        }
        nodes.unlink(victim)
        dropResident(victim)
    }

    /// Keeps `id` as a ghost of the expert that evicted it. The ghosts are the last evictions, as many as there
    /// are resident blocks (LeCaR's history): older ones are forgotten, whether or not they came back.
    private func remember(_ id: UInt64, byModel: Bool) {
        ghosts[id] = (byModel, clock)
        ghostOrder.append((id, clock))
        let limit = max(16, resident)
        while ghostOrder.count - ghostStart > limit {
            let old = ghostOrder[ghostStart]
            ghostStart += 1
            // A block evicted again since has a newer ghost: only the ghost this entry made goes.
            if ghosts[old.id]?.at == old.at { ghosts.removeValue(forKey: old.id) }
        }
        if ghostStart > 4096 && ghostStart * 2 > ghostOrder.count {
            ghostOrder.removeFirst(ghostStart)
            ghostStart = 0
        }
    }

    /// A miss on a ghost: the expert that evicted it pays, more the sooner the block came back.
    private func regret(_ ghost: (byModel: Bool, at: Int64)) {
        // LeCaR's discount 0.005^(1/N) per request, N the resident blocks.
        let reward = pow(0.005, Double(clock - ghost.at) / Double(max(16, resident)))
        let factor = exp(Self.learningRate * reward)
        var model = modelWeight
        var lru = 1 - modelWeight
        if ghost.byModel { lru *= factor } else { model *= factor }
        modelWeight = min(0.99, max(0.01, model / (model + lru)))
    }

    public func remove(_ id: UInt64) -> Bool { removeResident(id) }
}
