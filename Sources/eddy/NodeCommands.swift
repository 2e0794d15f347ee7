import ArgumentParser
import CacheCore
import CacheNode
import EddyAdmin
import EddyAuth
import EddyConfig
import EddyGateway
import EddyTLS
import Foundation
import Logging
import Membership
import NIOCore
import ObjectStorage
import SegmentStore
import ServiceLifecycle
import StoreServer
import StreamModel
import WireProtocol
import Workloads
import WriteBack

/// Options of a cache node, shared by `eddy node` and `eddy up`.
struct NodeOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "The node's memory for blocks, in bytes (suffixes K, M, G): its caches take 7/8, answers in flight the rest."
    )
    var cacheBytes: String = "256M"

    @Option(
        name: .long,
        help:
            "Eviction policy: \(PolicyKind.allCases.filter { $0 != .belady }.map(\.rawValue).joined(separator: ", ")).")
    var policy: String = "stream"

    @Option(name: .long, help: "Block size in bytes (suffixes K, M).")
    var blockSize: String = "1M"

    @Option(name: .long, help: "Share of the cache for full blocks of segments other nodes own.")
    var nearCacheShare: Double = 0.1

    @Option(
        name: .long,
        help: "Owner cache shards; one segment fills at most 1/shards of the owner cache (0: half the cores, 1-8).")
    var cacheShards: Int = 0

    @Option(name: .long, help: "The node's zone label (clients prefer their own zone).")
    var zone: String = ""

    @Option(
        name: .long,
        help: "Origins (comma-separated, or *) whose browser pages may call the HTTP gateway (CORS).")
    var httpCorsOrigins: String = ""

    @Flag(
        name: .long, inversion: .prefixedNo,
        help: "Tell the stream policy where each reader is (reader-aware eviction; experimental).")
    var readerHints = false

    @Option(
        name: .long,
        help: "Record the node's block requests to FILE (block trace with reader and kind; `eddy sim --format block`).")
    var traceOut: String?

    @Flag(
        name: .customLong("whatif"), inversion: .prefixedNo,
        help: "Run shadow policies on a sample of the block requests and serve their hit ratios (/whatif).")
    var whatIf = true

    @Option(
        name: .customLong("whatif-rate"),
        help: "The what-if's sampling rate in (0, 1], or auto (all requests while the smallest size is 2048 blocks).")
    var whatIfRate: String = "auto"

    @Option(
        name: .customLong("whatif-cpu-budget"),
        help: "With --whatif-rate auto, the share of the node's CPU the what-if may use before it lowers its rate.")
    var whatIfCPUBudget: Double = 0.03

    @Option(
        name: .customLong("whatif-sizes"),
        help: "Cache sizes the what-if simulates, comma-separated (default: 0.25-4 x the owner cache).")
    var whatIfSizes: String?

    @Option(
        name: .customLong("whatif-policies"),
        help: "Policies the what-if shadows, comma-separated (default: every policy but belady).")
    var whatIfPolicies: String?

    func apply(to c: inout NodeConfiguration) throws {
        c.cacheBytes = try parseSize(cacheBytes, what: "--cache-bytes")
        c.blockSize = UInt64(try parseSize(blockSize, what: "--block-size"))
        c.policy = policy
        c.nearCacheShare = nearCacheShare
        c.cacheShards = cacheShards
        c.zone = zone
        c.traceOut = traceOut
        c.readerHints = readerHints
        c.whatIf = whatIf
        if whatIfRate != "auto" {
            guard let rate = Double(whatIfRate), rate > 0, rate <= 1 else {
                throw ValidationError("--whatif-rate '\(whatIfRate)': auto or a number above 0 and at most 1")
            }
            c.whatIfRate = rate
        }
        c.whatIfSizes = try whatIfSizes.map { list in
            try list.split(separator: ",").map { try parseSize(String($0), what: "--whatif-sizes") }
        }
        c.whatIfCPUBudget = whatIfCPUBudget
        c.whatIfPolicies = whatIfPolicies.map { $0.split(separator: ",").map(String.init) }
        try c.validate()
    }
}

/// How a node learns the ring: the static list with heartbeats, or registrations in etcd (`eddy node`).
struct MembershipOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "static: the --members list, with heartbeats; etcd: members register in etcd under a lease (--etcd).")
    var membership: String = "static"

    @Option(
        name: .long,
        help: "Every member of the ring, this node included: HOST:PORT,HOST:PORT,... (--membership static).")
    var members: String?

    @Option(name: .long, help: "The etcd v3 gateway, http://HOST:PORT (--membership etcd).")
    var etcd: String?

    @Option(name: .long, help: "The ring's etcd key prefix: members register at PREFIX/members/HOST:PORT.")
    var etcdPrefix: String = "/eddy"

    @Option(name: .long, help: "Seconds a member's etcd registration outlives its last keep-alive (2-3600).")
    var etcdLeaseTtl: Int = 10

    /// A node configuration for `listen` and `store` with this membership.
    func configuration(listen: String, store: String) throws -> NodeConfiguration {
        let address = try ServerAddress(parsing: listen)
        let list = try ServerAddress.list(parsing: members ?? "")
        var c = NodeConfiguration(listen: address, store: try ServerAddress(parsing: store), members: list)
        // The settings of the other kind of membership are ignored (a file can keep both, and one key switches).
        switch membership {
        case "static":
            guard members != nil else { throw ValidationError("--membership static needs --members") }
        case "etcd":
            guard let etcd else { throw ValidationError("--membership etcd needs --etcd http://HOST:PORT") }
            var e = EtcdMembershipConfiguration(endpoint: etcd)
            e.prefix = etcdPrefix
            e.leaseTTL = etcdLeaseTtl
            c.etcd = e
        default:
            throw ValidationError("--membership '\(membership)': static or etcd")
        }
        return c
    }
}

/// Where a node writes back (and `backup`, `restore`, `export` read and write): shared by `eddy node`,
/// `eddy up` and those commands.
struct ObjectStoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help:
            "Object storage: file://DIR or s3://BUCKET/PREFIX (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); none: no write-back."
    )
    var objectStore: String?

    @OptionGroup var s3: S3Options

    /// The location given, or `fallback` when none was; nil for `none`.
    func location(fallback: String?) throws -> ObjectStoreLocation? {
        guard let url = objectStore ?? fallback, url != "none" else { return nil }
        return try s3.location(url)
    }

    /// The store at the location given (or `fallback`); nil for `none`.
    func open(fallback: String? = nil) throws -> (
        store: any ObjectStore, prefix: String, location: ObjectStoreLocation
    )? {
        guard let location = try location(fallback: fallback) else { return nil }
        return (try location.makeStore(environment: ProcessInfo.processInfo.environment), location.prefix, location)
    }
}

/// The S3 settings beside an object storage URL.
struct S3Options: ParsableArguments {
    @Option(name: .long, help: "S3 endpoint URL (http://HOST:PORT); AWS when not given.")
    var s3Endpoint: String?

    @Option(name: .long, help: "S3 region (else AWS_REGION, else us-east-1).")
    var s3Region: String?

    @Flag(
        name: .long, inversion: .prefixedNo,
        help: "Path-style S3 addressing (HOST/BUCKET/KEY), what most S3-compatible servers want.")
    var s3PathStyle = false

    @Option(name: .long, help: "Seconds one S3 request may take before it is cut and retried.")
    var s3Timeout: Double = 30

    @Option(
        name: .long,
        help:
            "PEM authorities an https S3 endpoint's certificate is checked against (else AWS_CA_BUNDLE, else the system's)."
    )
    var s3Ca: String?

    /// `url` (file://DIR or s3://BUCKET/PREFIX) with these settings.
    func location(_ url: String) throws -> ObjectStoreLocation {
        guard s3Timeout > 0, s3Timeout <= 3600 else {
            throw ValidationError("--s3-timeout must be more than 0 and at most 3600 seconds")
        }
        var location = try ObjectStoreLocation(
            parsing: url, endpoint: s3Endpoint, region: s3Region, pathStyle: s3PathStyle,
            environment: ProcessInfo.processInfo.environment)
        location.requestTimeout = .milliseconds(Int64(s3Timeout * 1000))
        if let s3Ca { location.authority = s3Ca }
        return location
    }
}

/// Write-back settings of a node, shared by `eddy node` and `eddy up`.
struct WriteBackOptions: ParsableArguments {
    @OptionGroup var objects: ObjectStoreOptions

    @Option(name: .long, help: "Keep at most this many bytes of each segment in the store once flushed (K, M, G).")
    var retainBytes: String?

    @Option(name: .long, help: "Keep flushed bytes in the store for this many seconds after their flush.")
    var retainSeconds: Double?

    @Option(name: .long, help: "Seconds without appends after which a partial tail block is flushed.")
    var flushIdle: Double = 30

    @Option(
        name: .long, help: "Refuse appends to a segment with more unflushed bytes than this (K, M, G); off by default.")
    var maxFlushLag: String?

    @Option(name: .long, help: "Flush workers per node.")
    var flushWorkers: Int = 4

    @Option(
        name: .long,
        help: """
            Full blocks per object storage object, 1 to 16; 0 (the default) picks 4 for s3:// (a request is what S3 \
            charges for and its server's CPU goes to) and 1 for file://.
            """)
    var objectBlocks: Int = 0

    func apply(to c: inout NodeConfiguration, fallback: String?) throws {
        guard let (store, prefix, _) = try objects.open(fallback: fallback) else {
            c.writeBack = nil
            return
        }
        var w = WriteBackConfiguration(objectStore: store, prefix: prefix)
        if let retainBytes { w.retainBytes = UInt64(try parseSize(retainBytes, what: "--retain-bytes")) }
        if let retainSeconds {
            guard retainSeconds > 0 else { throw EddyError(.invalidArgument, "--retain-seconds must be positive") }
            w.retainSeconds = .milliseconds(Int64(retainSeconds * 1000))
        }
        guard flushIdle > 0 else { throw EddyError(.invalidArgument, "--flush-idle must be positive") }
        w.flushIdle = .milliseconds(Int64(flushIdle * 1000))
        if let maxFlushLag { w.maximumFlushLag = UInt64(try parseSize(maxFlushLag, what: "--max-flush-lag")) }
        guard (1...64).contains(flushWorkers) else {
            throw EddyError(.invalidArgument, "--flush-workers must be 1...64")
        }
        w.workers = flushWorkers
        guard (0...WriteBackConfiguration.maximumObjectBlocks).contains(objectBlocks) else {
            throw EddyError(
                .invalidArgument,
                "--object-blocks must be 0 (automatic) to \(WriteBackConfiguration.maximumObjectBlocks)")
        }
        w.objectBlocks = objectBlocks > 0 ? objectBlocks : (store is S3ObjectStore ? 4 : 1)
        c.writeBack = w
    }
}

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cache node: one member of the ring in front of a store.",
        discussion: """
            The node speaks the store's client protocol, so every client command works against it. It owns the
            segments the ring gives it (reading them from the store, only it), forwards the others to their
            owners, and keeps a near cache of full blocks it does not own.
            """)

    @Option(name: .long, help: "HOST:PORT to listen on; also the node's name in the ring.") var listen: String
    @Option(name: .long, help: "The store, HOST:PORT.") var store: String = "127.0.0.1:9099"
    @OptionGroup var upstream: UpstreamOptions
    @Option(
        name: .long,
        help:
            "The HTTP and Server-Sent Events gateway (docs/http.md): HOST:PORT, auto (the protocol port + 200) or none."
    )
    var httpListen: String = "none"
    @OptionGroup var ring: MembershipOptions
    @OptionGroup var options: NodeOptions
    @OptionGroup var writeBack: WriteBackOptions
    @OptionGroup var security: SecurityOptions
    @OptionGroup var process: ServerProcessOptions

    func run() async throws {
        try await reportingErrors {
            try process.bootstrapLogging()
            var c = try ring.configuration(listen: listen, store: store)
            try upstream.apply(to: &c)
            try options.apply(to: &c)
            try writeBack.apply(to: &c, fallback: nil)
            c.access = try await security.access(logger: Logger(label: "eddy"), server: "node \(c.listen)")
            c.serviceToken = try await security.nodeServiceToken(c.access)
            c.limits = security.limits
            c.rates = security.rates()
            c.tls = try security.serverTLS(logger: Logger(label: "eddy"), server: "node \(c.listen)")
            let admin = try process.admin(beside: c.listen)
            c.metricsFactory = admin?.metrics.factory
            let http = try httpAddress(listen: c.listen)
            let node = try await CacheNode.start(configuration: c)
            var services: [any Service] = []
            let link = GatewayLink()
            var adminServer: AdminServer?
            if let admin {
                do {
                    adminServer = try await admin.start(for: "node", access: c.access, tls: c.tls) {
                        AdminRoutes.node(node, metrics: $0, gateway: link)
                    }
                    services.append(adminServer!)
                } catch {
                    await node.close()
                    throw error
                }
            }
            if let http {
                do {
                    let gateway = try await startGateway(
                        http, node: ServerAddress(host: c.listen.host, port: node.port), access: c.access, tls: c.tls,
                        cors: options.httpCorsOrigins)
                    gateway.link(link, dashboardPort: adminServer?.address.port)
                    services.append(ClosingService.node(node, grace: process.drainGrace))
                    services.append(gateway)
                } catch {
                    for case let s as AdminServer in services { await s.close() }
                    await node.close()
                    throw error
                }
            } else {
                services.append(ClosingService.node(node, grace: process.drainGrace))
            }
            let logger = Logger(label: "eddy")
            if c.etcd != nil, ring.members != nil {
                logger.notice("--members is ignored: with --membership etcd the members are those registered in etcd")
            }
            logger.info(
                "eddy node ready",
                metadata: c.isRegional
                    ? [
                        "listen": "\(c.listen)",
                        "upstream_ring": "\(c.upstreamRing.map(\.description).joined(separator: ","))",
                    ]
                    : ["listen": "\(c.listen)", "store": "\(c.store)"])
            let hangup = reloadOnHangup(tls: c.tls, access: c.access, logger: logger)
            defer { hangup.cancel() }
            try await process.serve(services, logger: logger)
        }
    }
}

extension Node {
    /// The gateway's address (`--http-listen`), nil for none.
    func httpAddress(listen: ServerAddress) throws -> ServerAddress? {
        do {
            return try AdminListen(parsing: httpListen).address(beside: listen, offset: 200, what: "http")
        } catch {
            throw ValidationError("--http-listen: \(error.message)")
        }
    }
}

/// `--upstream-ring` and `--upstream-zone` of `eddy node` and `eddy up`: a regional ring reads the home ring's
/// nodes in place of a store (docs/regions.md).
struct UpstreamOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "A regional ring (docs/regions.md): the home ring's nodes, HOST:PORT,..., read from in place of a store.")
    var upstreamRing: String?

    @Option(name: .long, help: "The zone preferred among the --upstream-ring nodes (the first that answers without).")
    var upstreamZone: String?

    /// The home ring's nodes (empty: not a regional ring).
    /// - Throws: a `ValidationError` for a bad address, or a zone without a ring.
    func addresses() throws -> [ServerAddress] {
        guard let upstreamRing, !upstreamRing.isEmpty else {
            if zone != nil { throw ValidationError("--upstream-zone needs --upstream-ring") }
            return []
        }
        do {
            return try upstreamRing.split(separator: ",").map {
                try ServerAddress(parsing: $0.trimmingCharacters(in: .whitespaces))
            }
        } catch {
            throw ValidationError("--upstream-ring: \((error as? EddyError)?.message ?? "\(error)")")
        }
    }

    /// The zone given (nil for none or empty).
    var zone: String? { upstreamZone.flatMap { $0.isEmpty ? nil : $0 } }

    /// Makes `c` a regional ring's node when a ring is given.
    func apply(to c: inout NodeConfiguration) throws {
        c.upstreamRing = try addresses()
        c.upstreamZone = zone
    }

    /// The settings under `section` (`node` or `up`), for `eddy config show`.
    func settings(_ section: String) -> [String: String] {
        ["\(section).upstream-ring": upstreamRing ?? "", "\(section).upstream-zone": upstreamZone ?? ""]
    }
}

/// Starts a node's HTTP gateway on `address`, in front of the node at `node`, and logs where.
func startGateway(_ address: ServerAddress, node: ServerAddress, access: AccessControl, tls: ServerTLS?, cors: String)
    async throws -> HTTPGateway
{
    var g = GatewayConfiguration(listen: address, node: node)
    g.access = access
    g.tls = tls
    g.corsOrigins = cors.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    let gateway = try await HTTPGateway.start(g)
    Logger(label: "eddy").info(
        "http gateway ready", metadata: ["listen": "\(gateway.address)", "node": "\(node)", "tls": "\(tls != nil)"])
    return gateway
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a node or the store about itself.",
        discussion: """
            The commands ask the server's admin HTTP API (--admin, default the protocol port + 100) and fall back to
            its protocol port when it has none (started with --admin-listen none or on another port).
            """,
        subcommands: [AdminStats.self, AdminWhatIf.self, AdminDLQ.self, AdminQueue.self])
}

struct AdminStats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "A node's (or the store's) counters: hits, misses, store reads, ring (docs/operations.md).")
    @OptionGroup var output: FormatOption
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in
            let json = try await admin.statsText()
            if output.json {
                print(json)
                return
            }
            guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
                throw EddyError(.malformedFrame, "the server's stats are not a JSON object")
            }
            for key in object.keys.sorted() {
                let value = object[key]!
                if let list = value as? [Any] {
                    print("\(key): \(list.map { "\($0)" }.joined(separator: ","))")
                } else if value is [String: Any],
                    let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
                {
                    print("\(key): \(String(decoding: data, as: UTF8.self))")
                } else {
                    print("\(key): \(value)")
                }
            }
        }
    }
}

struct AdminWhatIf: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whatif",
        abstract:
            "What each eviction policy would hit on this node at each cache size (SHARDS shadows; docs/tuning.md).")
    @OptionGroup var output: FormatOption
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in
            let answer = try await admin.ask(.whatIf)
            if output.json { return printJSON(answer) }
            print(WhatIfTable.text(answer), terminator: "")
        }
    }
}

/// The what-if answer as a table: a row per policy, a column per cache size, the best policy of each size marked.
enum WhatIfTable {
    static func text(_ answer: [String: Any]) -> String {
        let rows = answer["rows"] as? [[String: Any]] ?? []
        var sizes: [Int64] = []
        var policies: [String] = []
        var ratio: [String: [Int64: Double]] = [:]
        for r in rows {
            guard let p = r["policy"] as? String, let b = (r["cache_bytes"] as? NSNumber)?.int64Value,
                let h = (r["hit_ratio"] as? NSNumber)?.doubleValue
            else { continue }
            if !sizes.contains(b) { sizes.append(b) }
            if !policies.contains(p) { policies.append(p) }
            ratio[p, default: [:]][b] = h
        }
        let best = sizes.map { b in policies.map { ratio[$0]?[b] ?? 0 }.max() ?? 0 }
        let size = { (n: Int64) in Report.humanSize(n, bytes: true) }
        let head = String(
            format: "%@: policy %@, owner cache %@, sample rate %.4g (%d of %d block requests)\n",
            "\(answer["node"] ?? "?")", "\(answer["policy"] ?? "?")",
            size((answer["cache_bytes"] as? NSNumber)?.int64Value ?? 0),
            (answer["sample_rate"] as? NSNumber)?.doubleValue ?? 0,
            (answer["sampled_requests"] as? NSNumber)?.intValue ?? 0, (answer["requests"] as? NSNumber)?.intValue ?? 0)
        let table =
            [["hit ratio"] + sizes.map(size)]
            + policies.map { p in
                [p]
                    + sizes.indices.map { i in
                        let h = ratio[p]?[sizes[i]] ?? 0
                        return String(format: "%.3f", h) + (h == best[i] ? "*" : " ")
                    }
            }
        return head + Report.aligned(table) + "* the best policy at that size\n"
    }
}
