import Foundation
import StreamModel
import Synchronization

/// WhatIf answers "with policy X and Y bytes of cache, what would this node hit?" while the node runs: it keeps
/// miniature simulations (shadow copies of policies, metadata only) fed with a spatially hashed sample of the
/// node's block requests.
///
/// The sampling is SHARDS (Waldspurger et al., FAST 2015), used for miniature simulations of any policy as in
/// Waldspurger et al., USENIX ATC 2017: a request is sampled when the hash of its block key falls under a threshold
/// `T = R x 2^64`, so every request of a sampled block is seen and none of the others; each shadow cache's capacity
/// is scaled by the same rate `R`. A sampled request's hit or miss in a shadow of `R x S` bytes estimates a hit or
/// miss in a cache of `S` bytes.
///
/// Recording is cheap and thread-safe (a hash, a comparison and, for sampled requests, an append under a lock);
/// the shadows run in ``replay()``, which the owner calls from one background task, so the policies' work stays
/// off the request path and its cost is measured (``cost``).
public final class WhatIf: Sendable {
    /// One figure of the table: what one policy would hit with one cache size.
    public struct Row: Sendable, Hashable {
        /// The policy's registry name (with parameters, if any).
        public var policy: String
        /// The cache size the figure is for, in bytes (the full size, not the shadow's scaled one).
        public var cacheBytes: Int64
        /// Hits over sampled requests.
        public var hitRatio: Double
        /// Hit bytes over sampled requested bytes.
        public var byteHitRatio: Double
    }

    /// What the what-if runs.
    public struct Configuration: Sendable, Hashable {
        /// Policies to shadow, as ``PolicyKind/parse(_:)`` reads them.
        public var policies: [String]
        /// Cache sizes in bytes, each one simulated for every policy.
        public var cacheBytes: [Int64]
        /// The sampling rate in (0, 1]; nil picks it from the sizes (``automaticRate(cacheBytes:blockSize:)``).
        public var rate: Double?
        /// The node's block size (the automatic rate keeps enough blocks in the smallest shadow).
        public var blockSize: Int64
        /// With the automatic rate, the share of the process's CPU time the replays may take: when they take more
        /// over a window of ``governorWindow``, the rate is lowered (and the shadows start again). nil: never.
        public var cpuBudget: Double? = 0.03

        /// Every policy of the registry that can run online (all but `belady`).
        public static let allOnlinePolicies = PolicyKind.allCases.filter { $0 != .belady }.map(\.rawValue)
        /// The multiples of the node's cache size simulated by default.
        public static let defaultMultiples: [Double] = [0.25, 0.5, 1, 2, 4]
        /// How often the CPU governor compares the replays' CPU time with the process's.
        public static let governorWindow: Duration = .seconds(5)
        /// The lowest rate the governor goes down to.
        public static let minimumRate = 1.0 / 4096
        /// Blocks the smallest shadow cache keeps at the automatic rate: below a few hundred objects the shadows
        /// of policies with small queues (S3-FIFO's 10 %, W-TinyLFU's 1 % window) stop behaving like the full
        /// size, so the rate never scales a cache below this.
        public static let minimumShadowBlocks: Int64 = 2048

        /// Creates a configuration.
        public init(policies: [String], cacheBytes: [Int64], rate: Double? = nil, blockSize: Int64) {
            self.policies = policies
            self.cacheBytes = cacheBytes
            self.rate = rate
            self.blockSize = blockSize
        }

        /// The default for a node: every online policy at ``defaultMultiples`` of its cache, automatic rate.
        public static func node(cacheBytes: Int64, blockSize: Int64) -> Configuration {
            Configuration(
                policies: allOnlinePolicies,
                cacheBytes: defaultMultiples.map { Int64((Double(cacheBytes) * $0).rounded()) },
                blockSize: blockSize)
        }

        /// The rate used: ``rate``, or the automatic one.
        public var effectiveRate: Double {
            rate ?? Self.automaticRate(cacheBytes: cacheBytes, blockSize: blockSize)
        }

        /// The largest rate at most 1 that scales the smallest size to no fewer than ``minimumShadowBlocks`` blocks:
        /// 1 (every request) while the smallest size holds at most that many blocks.
        public static func automaticRate(cacheBytes: [Int64], blockSize: Int64) -> Double {
            guard let smallest = cacheBytes.min(), smallest > 0, blockSize > 0 else { return 1 }
            let blocks = Double(smallest) / Double(blockSize)
            return min(1, Double(minimumShadowBlocks) / blocks)
        }

        /// Checks the policies, sizes and rate.
        /// - Throws: ``EddyError/Code/invalidArgument`` naming the bad value.
        public func validate() throws(EddyError) {
            guard !policies.isEmpty else { throw EddyError(.invalidArgument, "the what-if needs at least one policy") }
            for p in policies {
                let (kind, _) = try PolicyKind.parse(p)
                guard kind != .belady else {
                    throw EddyError(.invalidArgument, "belady needs future requests: the what-if cannot run it")
                }
            }
            guard !cacheBytes.isEmpty, cacheBytes.allSatisfy({ $0 > 0 }) else {
                throw EddyError(.invalidArgument, "what-if cache sizes must be positive, and at least one")
            }
            if let rate, !(rate > 0 && rate <= 1) {
                throw EddyError(.invalidArgument, "what-if sampling rate \(rate) is outside (0, 1]")
            }
            if let cpuBudget, !(cpuBudget > 0 && cpuBudget <= 1) {
                throw EddyError(.invalidArgument, "what-if CPU budget \(cpuBudget) is outside (0, 1]")
            }
        }
    }

    /// Totals of the sampling.
    public struct Totals: Sendable, Hashable {
        /// Requests recorded (sampled or not).
        public var requests: Int
        /// Requests sampled and replayed.
        public var sampled: Int
        /// Sampled requests dropped because the replay fell behind (``maxPending``).
        public var dropped: Int
        /// CPU seconds spent replaying, since the start (restarts included).
        public var replaySeconds: Double
        /// The sampling rate now.
        public var rate: Double
        /// Times the CPU governor lowered the rate and started the shadows again.
        public var restarts: Int
    }

    /// The sampled requests buffered between replays beyond which new ones are dropped (and counted), so a
    /// replay that falls behind costs bounded memory.
    public static let maxPending = 1 << 20

    private struct Pending {
        var ids: [UInt64] = []
        var sizes: [Int64] = []
        var requests = 0
        var bytes: Int64 = 0
        var dropped = 0
    }

    private final class Shadow {
        let label: String
        let cacheBytes: Int64
        let policy: any EvictionPolicy
        var hits = 0
        var requests = 0
        var hitBytes: Int64 = 0
        var requestedBytes: Int64 = 0

        init(label: String, cacheBytes: Int64, policy: any EvictionPolicy) {
            self.label = label
            self.cacheBytes = cacheBytes
            self.policy = policy
        }
    }

    private struct Shadows {
        var list: [Shadow]
        var rate: Double
        var restarts = 0
        var sampled = 0
        var sampledBytes: Int64 = 0
        /// Requests and bytes recorded (sampled or not) since the shadows started, up to the last replay, less the
        /// dropped ones.
        var seen = 0.0
        var seenBytes = 0.0
        var seconds = 0.0
    }

    /// The configuration in use.
    public let configuration: Configuration
    private let threshold: Atomic<UInt64>
    private let pending = Mutex(Pending())
    private let shadows: Mutex<Shadows>
    private let replaying = Atomic<Bool>(false)

    /// The sampling rate in use.
    public var rate: Double { shadows.withLock { $0.rate } }

    /// Creates the shadows.
    /// - Throws: ``EddyError/Code/invalidArgument`` for a configuration ``Configuration/validate()`` refuses.
    public init(_ configuration: Configuration) throws(EddyError) {
        try configuration.validate()
        self.configuration = configuration
        let rate = configuration.effectiveRate
        threshold = Atomic(Self.threshold(rate))
        shadows = Mutex(Shadows(list: try Self.shadows(configuration, rate: rate), rate: rate))
    }

    private static func threshold(_ rate: Double) -> UInt64 {
        rate >= 1 ? .max : UInt64((rate * 0x1p64).rounded(.down))
    }

    private static func shadows(_ configuration: Configuration, rate: Double) throws(EddyError) -> [Shadow] {
        var list: [Shadow] = []
        for p in configuration.policies {
            let (kind, parameters) = try PolicyKind.parse(p)
            for bytes in configuration.cacheBytes {
                let scaled = max(1, Int64((Double(bytes) * rate).rounded()))
                let policy = kind.make(capacity: scaled, parameters: parameters, objectSize: configuration.blockSize)
                list.append(Shadow(label: p, cacheBytes: bytes, policy: policy))
            }
        }
        return list
    }

    /// Starts a thread of its own that calls ``replay()`` every `interval` until ``stopReplaying()``, and, with
    /// the automatic rate and a ``Configuration/cpuBudget``, lowers the rate when the replays take more than the
    /// budget of the process's CPU time over a ``Configuration/governorWindow`` in which the process was busy
    /// (at least half a CPU second); `lowered` hears of it (old rate, new rate, the share measured).
    public func startReplaying(
        every interval: Duration, lowered: (@Sendable (Double, Double, Double) -> Void)? = nil
    ) {
        guard !replaying.exchange(true, ordering: .relaxed) else { return }
        let micros = UInt32(clamping: Int(interval.inSeconds * 1e6))
        let budget = configuration.rate == nil ? configuration.cpuBudget : nil
        let thread = Thread { [self] in
            var windowStart = ContinuousClock.now
            var process = Self.cpuSeconds(CLOCK_PROCESS_CPUTIME_ID)
            var replayed = totals.replaySeconds
            while replaying.load(ordering: .relaxed) {
                usleep(micros)
                replay()
                guard let budget, ContinuousClock.now - windowStart >= Configuration.governorWindow else { continue }
                let processNow = Self.cpuSeconds(CLOCK_PROCESS_CPUTIME_ID)
                let replayedNow = totals.replaySeconds
                let used = processNow - process
                let share = used > 0 ? (replayedNow - replayed) / used : 0
                windowStart = ContinuousClock.now
                process = processNow
                replayed = replayedNow
                guard used >= 0.5, share > budget else { continue }
                let old = rate
                let new = max(Configuration.minimumRate, old * max(1.0 / 64, min(0.5, 0.8 * budget / share)))
                guard new < old else { continue }
                lower(to: new)
                lowered?(old, new, share)
            }
        }
        thread.name = "eddy-whatif"
        thread.start()
    }

    /// Stops the replay thread (it ends after its current replay).
    public func stopReplaying() { replaying.store(false, ordering: .relaxed) }

    /// Lowers the sampling rate to `rate` and starts every shadow again at the new scale: the figures count
    /// from now (a shadow scaled for one rate cannot carry on at another).
    func lower(to rate: Double) {
        let t = Self.threshold(rate)
        shadows.withLock { s in
            guard rate < s.rate, let list = try? Self.shadows(configuration, rate: rate) else { return }
            s.list = list
            s.rate = rate
            s.restarts += 1
            s.sampled = 0
            s.sampledBytes = 0
            s.seen = 0
            s.seenBytes = 0
            threshold.store(t, ordering: .relaxed)
            pending.withLock { p in
                p = Pending()
            }
        }
    }

    /// CPU seconds of the process or of the calling thread.
    static func cpuSeconds(_ clock: clockid_t) -> Double {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Whether requests of block `id` are sampled.
    @inline(__always)
    public func samples(_ id: UInt64) -> Bool { SeededRandom.mix(id) <= threshold.load(ordering: .relaxed) }

    /// Records one block request (a ``BlockKey``'s packed value and the block's bytes).
    public func record(_ id: UInt64, size: Int64) {
        let sampled = samples(id)
        pending.withLock { p in
            p.requests += 1
            p.bytes += size
            guard sampled else { return }
            guard p.ids.count < Self.maxPending else {
                p.dropped += 1
                return
            }
            p.ids.append(id)
            p.sizes.append(size)
        }
    }

    /// Runs the requests recorded since the last call through every shadow. Call it from one task at a time
    /// (calls are serialised; a second caller waits).
    public func replay() {
        let start = Self.cpuSeconds(CLOCK_THREAD_CPUTIME_ID)
        shadows.withLock { s in
            let rate = s.rate
            let (ids, sizes, seen, seenBytes) = pending.withLock { p in
                defer {
                    p.ids = []
                    p.sizes = []
                    p.ids.reserveCapacity(1024)
                    p.sizes.reserveCapacity(1024)
                }
                // A dropped request was sampled: take it out of what the sample should have held.
                let dropped = Double(p.dropped) / rate
                return (
                    p.ids, p.sizes, Double(p.requests) - dropped,
                    Double(p.bytes) - dropped * Double(configuration.blockSize)
                )
            }
            guard !ids.isEmpty else { return }
            for shadow in s.list {
                let policy = shadow.policy
                var hits = 0
                var hitBytes: Int64 = 0
                var requestedBytes: Int64 = 0
                for i in ids.indices {
                    let size = sizes[i]
                    requestedBytes += size
                    if policy.access(CacheRequest(id: ids[i], size: size)) {
                        hits += 1
                        hitBytes += size
                    }
                }
                shadow.hits += hits
                shadow.requests += ids.count
                shadow.hitBytes += hitBytes
                shadow.requestedBytes += requestedBytes
            }
            s.sampled += ids.count
            s.sampledBytes += sizes.reduce(0, +)
            s.seen = seen
            s.seenBytes = seenBytes
            s.seconds += Self.cpuSeconds(CLOCK_THREAD_CPUTIME_ID) - start
        }
    }

    /// The table: one row per policy and size, in configuration order (policies, then sizes).
    ///
    /// Below rate 1 the ratios carry SHARDS's adjustment (SHARDS_adj): the sample's size differs from its expected
    /// size `R x N` mostly because a few very popular blocks fell in or out of it, and such blocks hit in any
    /// cache, so the difference `R x N - sampled` is counted as hits (or, when negative, taken from them) and the
    /// ratio is over `R x N`. At rate 1 the figures are the plain replay's.
    public func rows() -> [Row] {
        shadows.withLock { s in
            let rate = s.rate
            let exact = rate >= 1
            let expected = rate * s.seen
            let expectedBytes = rate * s.seenBytes
            let extra = expected - Double(s.sampled)
            let extraBytes = expectedBytes - Double(s.sampledBytes)
            func ratio(_ hits: Double, _ total: Double) -> Double { total <= 0 ? 0 : min(1, max(0, hits / total)) }
            return s.list.map { x in
                Row(
                    policy: x.label, cacheBytes: x.cacheBytes,
                    hitRatio: exact
                        ? ratio(Double(x.hits), Double(x.requests)) : ratio(Double(x.hits) + extra, expected),
                    byteHitRatio: exact
                        ? ratio(Double(x.hitBytes), Double(x.requestedBytes))
                        : ratio(Double(x.hitBytes) + extraBytes, expectedBytes))
            }
        }
    }

    /// What was sampled and what the replays cost.
    public var totals: Totals {
        let (requests, dropped) = pending.withLock { ($0.requests, $0.dropped) }
        return shadows.withLock { s in
            Totals(
                requests: requests, sampled: s.sampled, dropped: dropped, replaySeconds: s.seconds, rate: s.rate,
                restarts: s.restarts)
        }
    }
}
