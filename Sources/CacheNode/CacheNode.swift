import CNUMA
import EddyTLS
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
                    try channel.pipeline.syncOperations.addServerFront(
                        tls: configuration.tls, limits: configuration.limits, open: { connections.count },
                        maxFrameSize: Frame.defaultMaxFrameSize, logger: configuration.logger)
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
        do {
            try await core.membership.join()
        } catch {
            try? await channel.close()
            await core.store.close()
            throw error
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
                "listen": "\(configuration.listen)",
                "store": "\(configuration.upstream.map(\.description).joined(separator: ","))",
                "members": "\(core.membership.ring.members.joined(separator: ","))",
                "membership": "\(core.membership.summary["membership"] ?? "")",
                "policy": "\(configuration.policy)", "cache-bytes": "\(configuration.cacheBytes)",
            ])
        var background = [heartbeats, catalog]
        if let writeBack = core.writeBack {
            background.append(Task { await writeBack.run(core: core) })
        }
        // The what-if's shadows run on a thread of their own, four times a second, off the request path and off
        // Swift's cooperative pool (a long replay must not hold up the tasks that serve requests).
        let logger = configuration.logger
        core.whatIf?.startReplaying(every: .milliseconds(250)) { old, new, share in
            logger.notice(
                "what-if over its CPU budget: sampling rate lowered, shadows started again",
                metadata: [
                    "old-rate": "\(old)", "rate": "\(new)", "cpu-share": "\(String(format: "%.3f", share))",
                ])
        }
        return CacheNode(core: core, channel: channel, background: background, connections: connections)
    }

    /// The port the node is bound to.
    public var port: Int { localAddress.port ?? 0 }

    /// Stops accepting connections, stops heartbeats, closes the listener, every client and peer connection
    /// (their requests in progress are cancelled; clients fail over), and the upstream connections.
    public func close() async {
        await shutdown(grace: .zero)
    }

    /// Shuts the node down gracefully, in order: `/ready` says draining; the listener closes (no new
    /// connections); requests in progress get up to half of `grace` to finish (tail reads parked at a segment's
    /// end are not waited for); write-back workers finish the flush in hand (their leases are acked or nacked, not
    /// left dangling) for up to the rest; the queue's journal is made durable; then every connection closes and
    /// clients fail over to the other nodes.
    public func drain(grace: Duration) async {
        await shutdown(grace: grace)
    }

    private func shutdown(grace: Duration) async {
        let start = ContinuousClock.now
        core.draining.store(true, ordering: .relaxed)
        // Leave the ring first (with etcd: the registration is revoked), so peers and clients move on while
        // the requests in progress finish.
        await core.membership.leave()
        try? await channel.close()
        if grace > .zero {
            core.configuration.logger.info(
                "draining", metadata: ["requests": "\(core.counters.inFlight.load(ordering: .relaxed))"])
            let deadline = start + grace / 2
            while core.counters.inFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(5))
            }
            let left = core.counters.inFlight.load(ordering: .relaxed)
            if left > 0 {
                core.configuration.logger.warning(
                    "requests still in progress at the end of the drain; cancelled", metadata: ["requests": "\(left)"])
            }
        }
        for t in background.withLock({ $0 }) { t.cancel() }
        core.whatIf?.stopReplaying()
        await core.writeBack?.shutdown(finishWork: max(.zero, start + grace - ContinuousClock.now))
        connections.closeAll()
        await core.store.close()
        core.trace?.close()
        await core.peers.closeAll()
        if grace > .zero {
            core.configuration.logger.info("drained", metadata: ["took": "\(ContinuousClock.now - start)"])
        }
    }
}
