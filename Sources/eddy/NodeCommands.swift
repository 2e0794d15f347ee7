import ArgumentParser
import CacheCore
import CacheNode
import Foundation
import Logging
import NIOCore
import SegmentStore
import StoreServer
import StreamModel
import WireProtocol

/// Options of a cache node, shared by `eddy node` and `eddy up`.
struct NodeOptions: ParsableArguments {
    @Option(name: .long, help: "Memory for cached blocks, in bytes (suffixes K, M, G).")
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

    @Option(name: .long, help: "The node's zone label (clients prefer their own zone).")
    var zone: String = ""

    @Flag(name: .long, help: "Tell the stream policy where each reader is (reader-aware eviction; experimental).")
    var readerHints = false

    @Option(
        name: .long,
        help: "Record the node's block requests to FILE (block trace with reader and kind; `eddy sim --format block`).")
    var traceOut: String?

    func apply(to c: inout NodeConfiguration) throws {
        c.cacheBytes = try parseSize(cacheBytes, what: "--cache-bytes")
        c.blockSize = UInt64(try parseSize(blockSize, what: "--block-size"))
        c.policy = policy
        c.nearCacheShare = nearCacheShare
        c.zone = zone
        c.traceOut = traceOut
        c.readerHints = readerHints
        try c.validate()
    }
}

/// Parses `123`, `64K`, `256M`, `2G`.
func parseSize(_ text: String, what: String) throws -> Int64 {
    let units: [Character: Int64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = text.uppercased()
    var scale: Int64 = 1
    if let last = digits.last, let u = units[last] {
        scale = u
        digits.removeLast()
    }
    guard let n = Int64(digits), n > 0 else {
        throw EddyError(.invalidArgument, "\(what) '\(text)' is not a size (a number with K, M or G)")
    }
    return n * scale
}

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cache node: one member of the ring in front of a store.",
        discussion: """
            The node speaks the store's client protocol, so every client command works against it. It owns the
            segments the ring gives it (reading them from the store, only it), forwards the others to their
            owners, and keeps a near cache of full blocks it does not own.
            """)

    @Option(name: .long, help: "HOST:PORT to listen on; also the node's name in --members.") var listen: String
    @Option(name: .long, help: "The store, HOST:PORT.") var store: String = "127.0.0.1:9099"
    @Option(name: .long, help: "Every member of the ring, this node included: HOST:PORT,HOST:PORT,...")
    var members: String
    @Option(name: .long, help: "Log level.") var logLevel: Logger.Level = .info
    @OptionGroup var options: NodeOptions

    func run() async throws {
        try await reportingErrors {
            bootstrapLogging(level: logLevel)
            var c = NodeConfiguration(
                listen: try ServerAddress(parsing: listen), store: try ServerAddress(parsing: store),
                members: try members.split(separator: ",").map { try ServerAddress(parsing: String($0)) })
            try options.apply(to: &c)
            let node = try await CacheNode.start(configuration: c)
            let logger = Logger(label: "eddy")
            logger.info("eddy node ready", metadata: ["listen": "\(c.listen)", "store": "\(c.store)"])
            let signal = await waitForSignal()
            logger.info("shutting down", metadata: ["signal": "\(signal)"])
            await node.close()
            logger.info("stopped")
        }
    }
}

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a node or the store about itself.", subcommands: [AdminStats.self])
}

struct AdminStats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "A node's (or the store's) counters: hits, misses, store reads, ring (docs/operations.md).")
    @Option(name: .long, help: "Output: text or json.") var format: String = "text"
    @OptionGroup var server: ServerOption

    func run() async throws {
        guard format == "text" || format == "json" else {
            throw ValidationError("unknown --format '\(format)': use text or json")
        }
        try await withClient(server) { client in
            let json = try await client.stats()
            if format == "json" {
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
