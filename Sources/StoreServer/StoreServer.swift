import EddyAuth
import EddyTLS
import Foundation
import Logging
import NIOCore
import NIOPosix
import SegmentStore
import StreamModel
import Synchronization
import WireProtocol

/// Settings of a ``StoreServer``.
public struct StoreServerConfiguration: Sendable {
    /// Where to listen.
    public var address: ServerAddress
    /// The largest frame accepted from a client.
    public var maxFrameSize: Int = Frame.defaultMaxFrameSize
    /// Requests one connection may have in progress before the server stops reading from it.
    public var maxInFlightPerConnection: Int = 4096
    /// The longest tail wait a client may ask for.
    public var maxWait: Duration = .seconds(60)
    /// Where the server logs.
    public var logger: Logger = Logger(label: "eddy.store.server")
    /// Connections, slow clients and idle connections (`--max-connections`, `--frame-timeout`, `--idle-timeout`).
    public var limits = ConnectionLimits()
    /// Requests and bytes a second per principal (`--tenant-requests`, `--tenant-bytes`; unlimited by default).
    public var rates = TenantRates()
    /// Who may connect and what each principal may do (`--auth`; off by default).
    public var access: AccessControl = .off
    /// Where refusals and admin actions are logged.
    public var audit = AuditLog()
    /// The listener's certificate (`--tls-cert`, `--tls-key`); nil: plain TCP.
    public var tls: ServerTLS?

    /// Creates a configuration.
    public init(address: ServerAddress) {
        self.address = address
    }
}

/// StoreServer serves a ``SegmentStore`` over the framed binary protocol (docs/protocol.md) with SwiftNIO.
///
/// Each connection starts with a hello; after it, requests run concurrently and answers go back as they
/// finish, tagged with their request ID. A bad request gets an error frame and the connection goes on;
/// a bad frame (over the size limit, or not a frame at all) gets an error frame and the connection closes.
/// Either way every other connection is unaffected.
public final class StoreServer: Sendable {
    /// The address the server is bound to (with the real port when 0 was asked for).
    public let localAddress: SocketAddress
    /// The store it serves.
    public let store: SegmentStore
    private let channel: Channel
    private let threadPool: NIOThreadPool
    private let counters: StoreReadCounters
    private let closing = Atomic<Bool>(false)
    private let connections: OpenConnections

    private init(
        store: SegmentStore, channel: Channel, threadPool: NIOThreadPool, counters: StoreReadCounters,
        connections: OpenConnections
    ) {
        self.store = store
        self.connections = connections
        self.channel = channel
        self.threadPool = threadPool
        self.counters = counters
        self.localAddress = channel.localAddress!
    }

    /// Binds and starts serving.
    /// - Throws: ``EddyError/Code/ioError`` when the address cannot be bound.
    public static func start(
        store: SegmentStore, configuration: StoreServerConfiguration,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(EddyError) -> StoreServer {
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let counters = StoreReadCounters()
        let connections = OpenConnections()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connections.add(channel)
                    try channel.pipeline.syncOperations.addServerFront(
                        tls: configuration.tls, limits: configuration.limits, open: { connections.count },
                        maxFrameSize: configuration.maxFrameSize, logger: configuration.logger)
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        StoreConnectionHandler(
                            store: store, configuration: configuration, threadPool: threadPool, counters: counters))
                }
            }
        do {
            let channel = try await bootstrap.bind(
                host: configuration.address.host, port: configuration.address.port
            ).get()
            let server = StoreServer(
                store: store, channel: channel, threadPool: threadPool, counters: counters, connections: connections)
            configuration.logger.info("store server listening", metadata: ["address": "\(server.address)"])
            return server
        } catch {
            try? await threadPool.shutdownGracefully()
            throw EddyError(.ioError, "cannot listen on \(configuration.address): \(error)")
        }
    }

    /// The port the server is bound to.
    public var port: Int { localAddress.port ?? 0 }

    /// The bound address as `HOST:PORT`.
    public var address: ServerAddress { ServerAddress(host: localAddress.ipAddress ?? "?", port: port) }

    /// Whether the server is accepting connections (not closing).
    public var isServing: Bool { !closing.load(ordering: .relaxed) }

    /// The stats document (`eddy admin stats` against the store, `/stats`; docs/operations.md lists the keys).
    public func statsJSON() -> String { counters.json(store.stats) }

    /// The store's streams (`/streams`): per segment its start, length and whether it is sealed.
    public func streamsJSON() -> String {
        let streams = store.listStreams().sorted { $0.name.description < $1.name.description }.map {
            stream -> [String: Any] in
            [
                "name": stream.name.description,
                "segments": stream.segments.map {
                    [
                        "segment": $0.segment.description, "start": $0.startOffset, "length": $0.length,
                        "sealed": $0.sealed,
                    ]
                        as [String: Any]
                },
            ]
        }
        let data =
            (try? JSONSerialization.data(
                withJSONObject: ["streams": streams], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The store's metrics now, from its counters (`/metrics`; docs/operations.md lists them).
    public func metricSamples() -> [MetricSample] {
        let stats = store.stats
        let streams = store.listStreams()
        var out = MetricSample.rows(
            [],
            [
                ("eddy_store_appended_events_total", .counter, Double(stats.events), "Events appended."),
                ("eddy_store_appended_bytes_total", .counter, Double(stats.bytes), "Event bytes appended."),
                (
                    "eddy_store_duplicate_appends_total", .counter, Double(stats.duplicates),
                    "Retried appends answered from the writer windows."
                ),
                (
                    "eddy_store_journal_syncs_total", .counter, Double(stats.syncs),
                    "Journal group commits (one sync each)."
                ),
                ("eddy_store_journal_records_total", .counter, Double(stats.records), "Journal records written."),
                ("eddy_store_checkpoints_total", .counter, Double(stats.checkpoints), "Checkpoints taken."),
                ("eddy_store_streams", .gauge, Double(streams.count), "Streams in the store."),
                (
                    "eddy_store_segments", .gauge, Double(streams.reduce(0) { $0 + $1.segments.count }),
                    "Segments in the store."
                ),
            ])
        for (stream, counts) in counters.snapshot().sorted(by: { $0.key.description < $1.key.description }) {
            out += MetricSample.rows(
                [("stream", stream.description)],
                [
                    (
                        "eddy_store_read_requests_total", .counter, Double(counts.readRequests),
                        "Reads served (of one byte or more)."
                    ),
                    ("eddy_store_read_bytes_total", .counter, Double(counts.readBytes), "Bytes served by reads."),
                ])
        }
        return out
    }

    /// Stops accepting connections, lets the reads in progress finish, then closes every connection (nodes and
    /// clients see the store go at once).
    public func close() async {
        closing.store(true, ordering: .relaxed)
        try? await channel.close()
        try? await threadPool.shutdownGracefully()
        connections.closeAll()
    }

    /// Waits until the listening socket is closed.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}
