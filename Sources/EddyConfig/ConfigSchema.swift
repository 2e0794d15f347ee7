import StreamModel
import WireProtocol

/// One setting of Eddy's configuration file: where it lives in the file (`section.name`), what values it takes,
/// its default, and which command-line flag of which server command it stands for.
///
/// The file, the environment and the command line are three ways to give the same flags: a key `node.cache-bytes`
/// is the flag `--cache-bytes` of `eddy node` (and of `eddy up`), and the environment variable
/// `EDDY_NODE_CACHE_BYTES`. The command line wins over the environment, which wins over the file
/// (docs/operations.md, "Configuration").
public struct ConfigKey: Sendable, Hashable {
    /// What values a key takes.
    public enum Kind: Sendable, Hashable {
        /// Any text.
        case text
        /// A byte count with an optional K, M or G suffix.
        case size
        /// A whole number in a range.
        case integer(ClosedRange<Int>)
        /// A number in a range (seconds, shares).
        case number(ClosedRange<Double>)
        /// `true` or `false`.
        case boolean
        /// HOST:PORT.
        case address
        /// A list of HOST:PORT (a YAML list, or one string with commas).
        case addresses
        /// One of these words.
        case choice([String])
        /// A mapping of logger label (or label prefix) to level.
        case levels
        /// An eviction policy, `NAME` or `NAME:PARAM=VALUE,...` (CacheCore's `PolicyKind.parse`).
        case policy
        /// An admin HTTP address: HOST:PORT, `auto` (the protocol address's port + 100) or `none`.
        case adminAddress
        /// A list of eviction policies (a YAML list, or one string with commas).
        case policies
        /// A list of byte counts with optional K, M or G suffixes (a YAML list, or one string with commas).
        case sizes
        /// A sampling rate: `auto` or a number above 0 and at most 1.
        case rate
    }

    /// The section of the file: `store`, `node`, `up`, `security`, `limits`, `log` or `shutdown`.
    public let section: String
    /// The key within its section; also the flag's name.
    public let name: String
    /// What values it takes.
    public let kind: Kind
    /// The default, as documented (empty: none).
    public let defaultValue: String
    /// What it does.
    public let help: String
    /// The server commands (`store`, `node`, `up`) that take it.
    public let commands: Set<String>
    /// The flag, `--name` unless it differs.
    public let flag: String

    init(
        _ section: String, _ name: String, _ kind: Kind, _ defaultValue: String, _ help: String,
        commands: Set<String>, flag: String? = nil
    ) {
        self.section = section
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.help = help
        self.commands = commands
        self.flag = flag ?? "--\(name)"
    }

    /// `section.name`, how messages and the docs name the key.
    public var path: String { "\(section).\(name)" }

    /// The environment variable that overrides the key: `EDDY_` and the path in capitals, `.` and `-` as `_`.
    public var environmentName: String {
        "EDDY_" + path.uppercased().map { $0 == "." || $0 == "-" ? "_" : $0 }.map(String.init).joined()
    }
}

/// Every key of the configuration file.
public enum ConfigSchema {
    static let store: Set<String> = ["store"]
    static let node: Set<String> = ["node"]
    static let nodeAndUp: Set<String> = ["node", "up"]
    static let storeAndUp: Set<String> = ["store", "up"]
    static let servers: Set<String> = ["store", "node", "up"]

    /// The log levels of swift-log.
    public static let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Every key, in the order of the docs.
    public static let keys: [ConfigKey] = [
        ConfigKey(
            "store", "data", .text, "", "The store's data directory (required by `eddy store`).", commands: store),
        ConfigKey("store", "listen", .address, "127.0.0.1:9099", "The store's protocol address.", commands: store),
        ConfigKey(
            "store", "admin-listen", .adminAddress, "auto",
            "The store's admin HTTP address (health, metrics): HOST:PORT, auto (protocol port + 100) or none.",
            commands: store),
        ConfigKey(
            "store", "io", .choice(["auto", "io_uring", "posix"]), "auto",
            "Journal I/O: io_uring when the kernel allows it (auto), or pwrite + fdatasync.", commands: storeAndUp),
        ConfigKey(
            "store", "checkpoint-bytes", .size, "64M", "Journal bytes between checkpoints.", commands: storeAndUp),

        ConfigKey(
            "node", "listen", .address, "", "The node's protocol address; also its name in `members` (required).",
            commands: node),
        ConfigKey(
            "node", "admin-listen", .adminAddress, "auto",
            "The node's admin HTTP address (health, metrics, dashboard): HOST:PORT, auto (protocol port + 100) or none.",
            commands: node),
        ConfigKey(
            "node", "http-listen", .adminAddress, "none",
            "The node's HTTP and Server-Sent Events gateway (docs/http.md): HOST:PORT, auto (protocol port + 200) or none.",
            commands: node),
        ConfigKey(
            "node", "http-cors-origins", .text, "",
            "Origins (comma-separated, or *) whose browser pages may call the HTTP gateway.", commands: nodeAndUp),
        ConfigKey("node", "store", .address, "127.0.0.1:9099", "The store the node reads from.", commands: node),
        ConfigKey(
            "node", "upstream-ring", .addresses, "",
            "A regional ring: the home ring's nodes, read from in place of the store (docs/regions.md).",
            commands: node),
        ConfigKey(
            "node", "upstream-zone", .text, "", "The zone preferred among the upstream ring's nodes.", commands: node),
        ConfigKey(
            "node", "membership", .choice(["static", "etcd"]), "static",
            "How the node learns the ring: the static `members` list with heartbeats, or registrations in etcd.",
            commands: node),
        ConfigKey(
            "node", "members", .addresses, "",
            "Every member of the ring, this node included (required with `membership: static`).", commands: node),
        ConfigKey(
            "node", "etcd", .text, "", "The etcd v3 gateway, http://HOST:PORT (required with `membership: etcd`).",
            commands: node),
        ConfigKey(
            "node", "etcd-prefix", .text, "/eddy",
            "The ring's etcd key prefix: members register at PREFIX/members/HOST:PORT.", commands: node),
        ConfigKey(
            "node", "etcd-lease-ttl", .integer(2...3600), "10",
            "Seconds a member's etcd registration outlives its last keep-alive.", commands: node),
        ConfigKey(
            "node", "cache-bytes", .size, "256M",
            "The node's memory for blocks: its caches take 7/8, answers in flight the rest.", commands: nodeAndUp),
        ConfigKey(
            "node", "policy", .policy, "stream", "The eviction policy, NAME or NAME:PARAM=VALUE (docs/tuning.md).",
            commands: nodeAndUp),
        ConfigKey("node", "block-size", .size, "1M", "The cache's block size.", commands: nodeAndUp),
        ConfigKey(
            "node", "cache-shards", .integer(0...64), "0",
            "Owner cache shards; one segment fills at most 1/shards of it. 0: half the cores, 1 to 8.",
            commands: nodeAndUp),
        ConfigKey(
            "node", "near-cache-share", .number(0...0.9), "0.1",
            "Share of the cache for full blocks of segments other nodes own.", commands: nodeAndUp),
        ConfigKey(
            "node", "zone", .text, "", "The node's zone label; clients prefer their own zone.", commands: nodeAndUp),
        ConfigKey(
            "node", "reader-hints", .boolean, "false",
            "Tell the stream policy where each reader is (experimental).", commands: nodeAndUp),
        ConfigKey(
            "node", "trace-out", .text, "",
            "Record the node's block requests to this file (`eddy sim --format block`).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "whatif", .boolean, "true",
            "Run the what-if: shadow policies on a sample of the block requests (`/whatif`, docs/tuning.md).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "whatif-rate", .rate, "auto",
            "The what-if's sampling rate, or auto (every request until the smallest size holds 2048 blocks).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "whatif-cpu-budget", .number(0.001...1), "0.03",
            "With the automatic rate, the share of the node's CPU the what-if may use before it lowers its rate.",
            commands: nodeAndUp),
        ConfigKey(
            "node", "whatif-sizes", .sizes, "",
            "Cache sizes the what-if simulates (default: 0.25, 0.5, 1, 2 and 4 times the owner cache).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "whatif-policies", .policies, "",
            "Policies the what-if shadows (default: every policy but belady).", commands: nodeAndUp),
        ConfigKey(
            "node", "object-store", .text, "",
            "Write-back target: file://DIR or s3://BUCKET/PREFIX, or none (`eddy up`: DATA/objects).",
            commands: nodeAndUp),
        ConfigKey("node", "s3-endpoint", .text, "", "S3 endpoint URL; AWS when not given.", commands: nodeAndUp),
        ConfigKey(
            "node", "s3-region", .text, "", "S3 region (else AWS_REGION, else us-east-1).", commands: nodeAndUp),
        ConfigKey(
            "node", "s3-path-style", .boolean, "false", "Path-style S3 addressing (most S3-compatible servers).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "s3-timeout", .number(0.001...3600), "30", "Seconds one S3 request may take before it is retried.",
            commands: nodeAndUp),
        ConfigKey(
            "node", "s3-ca", .text, "",
            "PEM authorities an https S3 endpoint's certificate is checked against (else AWS_CA_BUNDLE, else the system's).",
            commands: nodeAndUp),
        ConfigKey(
            "node", "retain-bytes", .size, "", "Keep at most this many flushed bytes of each segment in the store.",
            commands: nodeAndUp),
        ConfigKey(
            "node", "retain-seconds", .number(0.001...(100 * 365 * 86400)), "",
            "Keep flushed bytes in the store this long after their flush.", commands: nodeAndUp),
        ConfigKey(
            "node", "flush-idle", .number(0.001...86400), "30",
            "Seconds without appends after which a partial tail block is flushed.", commands: nodeAndUp),
        ConfigKey(
            "node", "max-flush-lag", .size, "", "Refuse appends to a segment with more unflushed bytes than this.",
            commands: nodeAndUp),
        ConfigKey("node", "flush-workers", .integer(1...64), "4", "Flush workers per node.", commands: nodeAndUp),
        ConfigKey(
            "node", "object-blocks", .integer(0...16), "0",
            "Full blocks per object storage object, 1 to 16; 0 picks 4 for s3:// and 1 for file://.",
            commands: nodeAndUp),

        ConfigKey("up", "data", .text, "./data", "`eddy up`'s data directory.", commands: ["up"]),
        ConfigKey("up", "store", .address, "127.0.0.1:9099", "`eddy up`'s store address.", commands: ["up"]),
        ConfigKey(
            "up", "nodes", .addresses, "127.0.0.1:9090,127.0.0.1:9091,127.0.0.1:9092", "`eddy up`'s node addresses.",
            commands: ["up"]),
        ConfigKey(
            "up", "admin-listen", .choice(["auto", "none"]), "auto",
            "`eddy up`'s admin HTTP servers: auto (each at its server's port + 100: 9199, 9190-9192) or none.",
            commands: ["up"]),
        ConfigKey(
            "up", "http-listen", .choice(["auto", "none"]), "auto",
            "`eddy up`'s HTTP gateways: auto (each node's port + 200: 9290-9292) or none.", commands: ["up"]),
        ConfigKey(
            "up", "upstream-ring", .addresses, "",
            "A regional `eddy up` (docs/regions.md): no store; its nodes read these home ring nodes.",
            commands: ["up"]),
        ConfigKey(
            "up", "upstream-zone", .text, "", "The zone preferred among the upstream ring's nodes.", commands: ["up"]),

        ConfigKey(
            "security", "auth", .text, "off",
            "Client authentication: off, tokens:FILE (a JSON tokens file), jwt:KEYFILE or k8s:FILE (docs/security.md).",
            commands: servers),
        ConfigKey(
            "security", "service-token", .text, "",
            "The token a node presents to the store and to other nodes: a principal with admin on * there.",
            commands: nodeAndUp),
        ConfigKey(
            "security", "tls-cert", .text, "",
            "PEM certificate (chain) of the server's listeners and admin HTTP port: TLS on; SIGHUP reloads it.",
            commands: servers),
        ConfigKey("security", "tls-key", .text, "", "PEM private key of --tls-cert.", commands: servers),
        ConfigKey(
            "security", "tls-ca", .text, "",
            "PEM authorities the server trusts for the store's and other nodes' certificates (and clients' with --tls-mutual).",
            commands: servers),
        ConfigKey(
            "security", "tls-mutual", .boolean, "false",
            "Require a client certificate signed by --tls-ca on every connection (mutual TLS).", commands: servers),

        ConfigKey(
            "limits", "max-connections", .integer(1...1_000_000), "16384",
            "Connections a server serves at once; the next are answered overloaded and closed.", commands: servers),
        ConfigKey(
            "limits", "frame-timeout", .number(0.1...3600), "30",
            "Seconds one frame may take to arrive once it has started: a client trickling bytes is cut off.",
            commands: servers),
        ConfigKey(
            "limits", "idle-timeout", .number(1...86400), "600",
            "Seconds a connection may see nothing read or written before it is closed.", commands: servers),
        ConfigKey(
            "limits", "tenant-requests", .number(0...1e9), "0",
            "Requests a second each principal may send (0: no limit; administrators of * are never limited).",
            commands: servers),
        ConfigKey(
            "limits", "tenant-bytes", .integer(0...1 << 40), "0",
            "Bytes a second each principal may send and be served (0: no limit).",
            commands: servers),

        ConfigKey(
            "log", "level", .choice(levels), "info", "The level of every logger.", commands: servers,
            flag: "--log-level"),
        ConfigKey(
            "log", "format", .choice(["text", "json"]), "text", "One line per event: text, or a JSON object.",
            commands: servers, flag: "--log-format"),
        ConfigKey(
            "log", "levels", .levels, "",
            "Levels per subsystem: logger label (or its prefix, such as eddy.node or eddy.s3) to level.",
            commands: servers, flag: "--log-levels"),

        ConfigKey(
            "shutdown", "grace-seconds", .number(0...3600), "30",
            "On SIGTERM or SIGINT, how long a clean shutdown may take before the process exits with status 1.",
            commands: servers,
            flag: "--shutdown-grace"),
    ]

    /// The key at `path` (`section.name`).
    public static func key(_ path: String) -> ConfigKey? { keys.first { $0.path == path } }

    /// The sections of the file.
    public static var sections: [String] {
        var seen: [String] = []
        for k in keys where !seen.contains(k.section) { seen.append(k.section) }
        return seen
    }
}

/// Parses `123`, `64K`, `256M`, `2G` (binary units).
/// - Parameter what: how messages name the value (a flag or a key).
/// - Throws: ``EddyError/Code/invalidArgument`` naming `what`.
public func parseSize(_ text: String, what: String) throws(EddyError) -> Int64 {
    let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = text.uppercased()
    var scale: Int64 = 1
    if let last = digits.last, let u = units[last] {
        scale = u
        digits.removeLast()
    }
    guard let n = Int64(digits), n > 0, n <= Int64.max / scale else {
        throw EddyError(.invalidArgument, "\(what) '\(text)' is not a size (a number with K, M or G)")
    }
    return n * scale
}

/// An admin HTTP address setting (`--admin-listen`, the keys `*.admin-listen`): `auto`, the protocol address's
/// host at its port + 100 (the store's 9099 gives 9199, node 9090 gives 9190); `none`; or HOST:PORT.
public enum AdminListen: Sendable, Hashable {
    case auto
    case none
    case address(ServerAddress)

    /// Parses `auto`, `none` or HOST:PORT.
    /// - Throws: ``EddyError/Code/invalidArgument`` saying what it takes.
    public init(parsing text: String) throws(EddyError) {
        switch text {
        case "auto": self = .auto
        case "none": self = .none
        default:
            do { self = .address(try ServerAddress(parsing: text)) } catch {
                throw EddyError(.invalidArgument, "\(error.message), or auto, or none")
            }
        }
    }

    /// The admin address of a server listening on `listen`; nil for `none`. A protocol port of 0 (chosen by the
    /// system) gives 0 too.
    /// - Throws: ``EddyError/Code/invalidArgument`` when `auto` would pass port 65535.
    /// The HTTP gateway's `--http-listen` takes the same words with `auto` at the protocol port + 200 (`offset`).
    public func address(beside listen: ServerAddress, offset: Int = 100, what: String = "admin")
        throws(EddyError) -> ServerAddress?
    {
        switch self {
        case .none: return nil
        case .address(let address): return address
        case .auto:
            guard listen.port + offset <= 65535 else {
                throw EddyError(
                    .invalidArgument, "\(what) address auto: port \(listen.port) + \(offset) is past 65535")
            }
            return ServerAddress(host: listen.host, port: listen.port == 0 ? 0 : listen.port + offset)
        }
    }
}
