import Logging
import NIOCore
import NIOPosix
import SegmentStore
import StreamModel
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
    private let channel: Channel
    private let threadPool: NIOThreadPool

    private init(channel: Channel, threadPool: NIOThreadPool) {
        self.channel = channel
        self.threadPool = threadPool
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
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: configuration.maxFrameSize)))
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
            let server = StoreServer(channel: channel, threadPool: threadPool)
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

    /// Stops accepting connections and closes the listening socket.
    public func close() async {
        try? await channel.close()
        try? await threadPool.shutdownGracefully()
    }

    /// Waits until the listening socket is closed.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}
