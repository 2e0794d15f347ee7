import CacheCore
import CoreMetrics
import EddyAuth
import EddyTLS
import Foundation
import Logging
import Membership
import StreamModel
import WireProtocol
import WriteBack

/// Settings of a ``CacheNode``; every field has a default but the addresses.
public struct NodeConfiguration: Sendable {
    /// Where the node listens; also its name in the ring (`HOST:PORT`), so it must be how peers reach it.
    public var listen: ServerAddress
    /// The segment store.
    public var store: ServerAddress
    /// A regional ring's upstream (`--upstream-ring`): the home ring's nodes, read from in place of ``store``
    /// (they answer the store's requests: owners read through them, appends and admin requests are forwarded to
    /// them). Empty: the node reads ``store``.
    public var upstreamRing: [ServerAddress] = []
    /// The zone of the home ring preferred among ``upstreamRing`` (`--upstream-zone`); nil: the first that answers.
    public var upstreamZone: String?

    /// What the node reads from: the home ring's nodes, or the store.
    public var upstream: [ServerAddress] { upstreamRing.isEmpty ? [store] : upstreamRing }
    /// Whether this is a regional ring's node (it reads a home ring, not a store).
    public var isRegional: Bool { !upstreamRing.isEmpty }
    /// Every member of the ring, this node included (the static list; heartbeats decide who is alive). Not used
    /// with ``etcd``.
    public var members: [ServerAddress]
    /// Membership through etcd (registration under a lease, the ring from a watch); nil: the static ``members``
    /// list with heartbeats.
    public var etcd: EtcdMembershipConfiguration? = nil
    /// The node's zone label; clients prefer nodes of their own zone.
    public var zone: String = ""
    /// The node's memory budget beyond its own code: the owner cache and the near cache share seven eighths of
    /// it; the last eighth is held back for answers in flight (``effectiveMaxBytesInFlight``, a sixteenth) and
    /// what each connection and request in progress holds, so the node's resident size stays within this plus
    /// about 64 MiB (its code and idle heap) with a thousand readers (docs/benchmarks.md, "Memory").
    public var cacheBytes: Int64 = 256 << 20
    /// The eviction policy of the owner cache, `name` or `name:key=value` (``PolicyKind/parse(_:)``).
    public var policy: String = "stream"
    /// The block size in bytes.
    public var blockSize: UInt64 = BlockGeometry.defaultBlockSize
    /// The share of the block caches (``cacheBytes`` less the in-flight reserve) kept for full blocks of segments
    /// other nodes own.
    public var nearCacheShare: Double = 0.1
    /// Shards (locks) of the owner cache; 0: automatic (``automaticCacheShards``). A segment's blocks live in one
    /// shard, so one segment can fill at most 1/shards of the owner cache: more shards mean less lock contention
    /// between cores, fewer mean more room for a few hot segments.
    public var cacheShards: Int = 0
    /// Who may connect to the node and what each principal may do (`--auth`; off by default).
    public var access: AccessControl = .off
    /// The token the node presents to the store and to other nodes (`--service-token`): its service identity,
    /// a principal with `admin` on `*` there. A client's token is never forwarded.
    public var serviceToken: String = ""
    /// Where refusals and admin actions are logged.
    public var audit = AuditLog()
    /// The listener's certificate (`--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-mutual`); nil: plain TCP. With
    /// it, the node also connects to the store and to the other nodes over TLS, presenting the same certificate.
    public var tls: ServerTLS?
    /// Requests and bytes a second per principal (`--tenant-requests`, `--tenant-bytes`; unlimited by default).
    public var rates = TenantRates()
    /// Connections, slow clients and idle connections (`--max-connections`, `--frame-timeout`, `--idle-timeout`).
    public var limits = ConnectionLimits()
    /// The longest tail wait a client may ask for.
    public var maxWait: Duration = .seconds(60)
    /// The longest a request to the store or a peer may take (tail waits add their wait to it).
    public var requestTimeout: Duration = .seconds(5)
    /// Time between heartbeats to each member.
    public var heartbeatInterval: Duration = .milliseconds(500)
    /// A member not heard from for this long leaves the ring (it rejoins when it answers again).
    public var failureTimeout: Duration = .milliseconds(2000)
    /// The most block bytes in flight at once (store loads, and answers until the socket has taken them, hits
    /// included); requests past it queue for up to ``requestTimeout`` and then fail with
    /// ``EddyError/Code/overloaded``. It bounds the memory the node uses beyond its cache. Nil (the default):
    /// a sixteenth of ``cacheBytes``, at least 8 MiB and at most 48 MiB (``effectiveMaxBytesInFlight``).
    public var maxBytesInFlight: Int64? = nil

    /// ``maxBytesInFlight``, or its default for ``cacheBytes``.
    public var effectiveMaxBytesInFlight: Int64 { maxBytesInFlight ?? min(48 << 20, max(8 << 20, cacheBytes / 16)) }

    /// The part of ``cacheBytes`` the caches leave to the rest of the node: answers in flight (hits are slices
    /// of cached blocks and cost nothing more, but a block evicted while answers to it are still being written
    /// stays in memory until they are, and so does a block loaded from the store until the cache takes it),
    /// connections' buffers and requests in progress.
    var inFlightReserve: Int64 { cacheBytes / 8 }
    /// Whether the node tells a reader-aware policy (`stream`) where each reader is (``ReaderAware``). Off by
    /// default until it measures better than the policy's own inference (docs/benchmarks.md).
    public var readerHints = false
    /// Blocks read ahead of a sequential reader (several store reads outstanding per scan).
    public var readAhead: Int = 4
    /// Requests one connection may have in progress before the node stops reading from it.
    public var maxInFlightPerConnection: Int = 1024
    /// When set, every block request is appended to this file as a block trace that `eddy sim` replays.
    public var traceOut: String?
    /// Whether the node runs the what-if (``WhatIf``): shadow copies of the policies on a spatially hashed sample of
    /// its owner block requests, served on the admin API's `/whatif`.
    public var whatIf = true
    /// The what-if's sampling rate in (0, 1]; nil: automatic (``WhatIf/Configuration/automaticRate(cacheBytes:blockSize:)``).
    public var whatIfRate: Double? = nil
    /// The cache sizes the what-if simulates, in bytes; nil: 0.25, 0.5, 1, 2 and 4 times the owner cache.
    public var whatIfSizes: [Int64]? = nil
    /// The policies the what-if shadows; nil: every policy that runs online.
    public var whatIfPolicies: [String]? = nil
    /// With the automatic rate, the share of the node's CPU time the what-if may take before it lowers its rate
    /// (``WhatIf/Configuration/cpuBudget``).
    public var whatIfCPUBudget: Double = 0.03
    /// Write-back to object storage (flushes, cold reads, retention); nil: off.
    public var writeBack: WriteBackConfiguration?
    /// Where the node logs.
    public var logger: Logger = Logger(label: "eddy.node")
    /// Where the node's request latency histograms go (`eddy_request_duration_seconds`); nil: not recorded.
    public var metricsFactory: (any MetricsFactory)? = nil

    /// Creates a configuration.
    public init(listen: ServerAddress, store: ServerAddress, members: [ServerAddress]) {
        self.listen = listen
        self.store = store
        self.members = members
    }

    /// The node's name in the ring.
    public var name: String { listen.description }

    /// What the node's membership needs of these settings.
    var membership: MembershipSettings {
        MembershipSettings(
            me: name, members: members, heartbeatInterval: heartbeatInterval, failureTimeout: failureTimeout,
            requestTimeout: requestTimeout, logger: logger)
    }

    /// Checks the settings.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the first bad setting.
    public func validate() throws(EddyError) {
        try limits.validate()
        if isRegional, writeBack != nil {
            throw EddyError(
                .invalidArgument,
                "a regional ring (--upstream-ring) does not write back: its home ring does; leave --object-store out")
        }
        if let own = upstreamRing.first(where: { $0 == listen || members.contains($0) }) {
            throw EddyError(
                .invalidArgument, "--upstream-ring names \(own), a member of this ring, not of the home ring")
        }
        if let etcd {
            try etcd.validate()
        } else {
            guard members.contains(listen) else {
                throw EddyError(.invalidArgument, "--members must include this node's own address \(listen)")
            }
        }
        guard blockSize >= 4096, blockSize <= 16 << 20 else {
            throw EddyError(.invalidArgument, "block size \(blockSize) is out of range 4096...16 MiB")
        }
        guard (0...64).contains(cacheShards) else {
            throw EddyError(.invalidArgument, "cache shards \(cacheShards) is out of range 0...64 (0: automatic)")
        }
        guard nearCacheShare >= 0, nearCacheShare < 1 else {
            throw EddyError(.invalidArgument, "near cache share \(nearCacheShare) is out of range [0, 1)")
        }
        guard cacheBytes >= Int64(blockSize) * 4 else {
            throw EddyError(.invalidArgument, "cache of \(cacheBytes) bytes holds fewer than 4 blocks")
        }
        _ = try PolicyKind.parse(policy)
        if whatIf { try whatIfConfiguration(ownerCacheBytes: ownerCacheBytes).validate() }
    }

    /// The owner cache's shards: ``cacheShards``, or when that is 0, half the cores between 1 and 8 (one shard
    /// on this project's 2-core machines: the whole owner cache is open to any segment).
    public var ownerCacheShards: Int {
        cacheShards > 0 ? cacheShards : min(8, max(1, ProcessInfo.processInfo.activeProcessorCount / 2))
    }

    var ownerCacheBytes: Int64 { blockCacheBytes - Int64(Double(blockCacheBytes) * nearCacheShare) }

    /// What the owner and near caches share: ``cacheBytes`` less ``inFlightReserve``.
    var blockCacheBytes: Int64 { cacheBytes - inFlightReserve }

    /// What the what-if runs, for an owner cache of `ownerCacheBytes`.
    func whatIfConfiguration(ownerCacheBytes: Int64) -> WhatIf.Configuration {
        var c = WhatIf.Configuration.node(cacheBytes: ownerCacheBytes, blockSize: Int64(blockSize))
        if let whatIfSizes { c.cacheBytes = whatIfSizes }
        if let whatIfPolicies { c.policies = whatIfPolicies }
        c.rate = whatIfRate
        c.cpuBudget = whatIfCPUBudget
        return c
    }
}
