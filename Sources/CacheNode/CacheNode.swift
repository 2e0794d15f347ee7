import CNUMA
import Logging
import NIOCore
import NIOPosix
import StreamModel
import Synchronization
import WireProtocol

/// CacheNode is one node of the ring: the listener, the ``NodeCore`` behind it, and its background work
/// (heartbeats, the catalog refresh). It speaks the store's client protocol, so every client command works
/// against it unchanged, plus the node-to-node messages (docs/protocol.md).
public final class CacheNode: Sendable {
    /// The node's core: routing, caches, counters.
    public let core: NodeCore
    /// The address the node is bound to.
    public let localAddress: SocketAddress
    private let channel: Channel
    private let background: Mutex<[Task<Void, Never>]>
    private let connections: OpenConnections

    private init(
        core: NodeCore, channel: Channel, background: [Task<Void, Never>], connections: OpenConnections
    ) {
        self.core = core
        self.channel = channel
        self.localAddress = channel.localAddress!
        self.background = Mutex(background)
        self.connections = connections
    }

    /// The accepted connections, so closing the node closes them too: clients see the node go at once and fail
    /// over, instead of waiting on a node that no longer answers.
    final class OpenConnections: Sendable {
        private let channels = Mutex<[ObjectIdentifier: Channel]>([:])

        func add(_ channel: Channel) {
            let id = ObjectIdentifier(channel)
            channels.withLock { $0[id] = channel }
            channel.closeFuture.whenComplete { _ in _ = self.channels.withLock { $0.removeValue(forKey: id) } }
        }

        func closeAll() {
            for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
        }
    }

    /// Binds, joins the ring and starts serving.
    /// - Throws: ``EddyError/Code/invalidArgument`` for bad settings, ``EddyError/Code/ioError`` when the
    ///   address cannot be bound.
    public static func start(
        configuration: NodeConfiguration, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(EddyError) -> CacheNode {
        // Blocks are large: have malloc map them (and unmap them when freed) instead of letting glibc raise its
        // mmap threshold and keep freed blocks in per-thread heaps, which grows the process beyond the cache.
        _ = eddy_mmap_allocations_from(256 << 10)
        let core = try NodeCore(configuration: configuration, group: group)
        let readerIDs = Atomic<Int>(0)
        let connections = OpenConnections()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            // Client connections mostly send small requests: each connection keeps its receive buffer, so a small
            // one (growing with large appends) keeps a thousand idle readers from holding 64 MiB.
            .childChannelOption(
                .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 4096, maximum: 1 << 20)
            )
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connections.add(channel)
                    let id = readerIDs.wrappingAdd(1, ordering: .relaxed).newValue
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: Frame.defaultMaxFrameSize)))
                    try channel.pipeline.syncOperations.addHandler(FrameWriter())
                    try channel.pipeline.syncOperations.addHandler(NodeConnectionHandler(core: core, readerID: id))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: configuration.listen.host, port: configuration.listen.port).get()
        } catch {
            throw EddyError(.ioError, "cannot listen on \(configuration.listen): \(error)")
        }
        await core.refreshCatalog()
        let heartbeats = Task { await core.membership.run() }
        let catalog = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                await core.refreshCatalog()
                // Answers and requests come and go in every thread's heap; what they freed is returned here, so
                // the node's resident memory follows its budget (docs/operations.md, Memory).
                eddy_release_free_heap()
            }
        }
        configuration.logger.info(
            "cache node listening",
            metadata: [
                "listen": "\(configuration.listen)", "store": "\(configuration.store)",
                "members": "\(configuration.members.map(\.description).joined(separator: ","))",
                "policy": "\(configuration.policy)", "cache-bytes": "\(configuration.cacheBytes)",
            ])
        var background = [heartbeats, catalog]
        if let writeBack = core.writeBack {
            background.append(Task { await writeBack.run(core: core) })
        }
        return CacheNode(core: core, channel: channel, background: background, connections: connections)
    }

    /// The port the node is bound to.
    public var port: Int { localAddress.port ?? 0 }

    /// Stops accepting connections, stops heartbeats, closes the listener, every client and peer connection
    /// (their requests in progress are cancelled; clients fail over), and the upstream connections.
    public func close() async {
        for t in background.withLock({ $0 }) { t.cancel() }
        await core.writeBack?.shutdown()
        try? await channel.close()
        connections.closeAll()
        await core.store.close()
        core.trace?.close()
        for p in core.peers.values { await p.close() }
    }
}
