import NIOCore
import NIOPosix
import Synchronization
import WireProtocol

/// FaultRelay passes TCP connections from a loopback port of its own to a target server, and cuts them on
/// demand: while cut, no byte passes either way, yet both sockets stay open and the relay keeps reading, so
/// each side sees a peer that went silent (as behind a partition, or a proxy that hangs), not one that closed.
/// What was held is delivered, in order, when the cut ends.
public final class FaultRelay: Sendable {
    /// The relay's own address: connect here to reach the target.
    public let address: ServerAddress
    private let listener: Channel
    private let state: RelayState

    /// Starts a relay in front of `target` on a free loopback port.
    public static func start(
        to target: ServerAddress, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> FaultRelay {
        let state = RelayState()
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .connect(host: target.host, port: target.port)
                    .flatMap { outbound in
                        let a = RelayHalf(state: state, peer: outbound)
                        let b = RelayHalf(state: state, peer: inbound)
                        state.add([a, b])
                        return inbound.pipeline.addHandler(a).flatMap {
                            outbound.pipeline.addHandler(b)
                        }.flatMap {
                            inbound.setOption(.autoRead, value: true)
                        }.flatMap {
                            outbound.setOption(.autoRead, value: true)
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress?.port ?? 0
        return FaultRelay(address: ServerAddress(host: "127.0.0.1", port: port), listener: listener, state: state)
    }

    private init(address: ServerAddress, listener: Channel, state: RelayState) {
        self.address = address
        self.listener = listener
        self.state = state
    }

    /// Stops passing bytes, either way, on every connection (present and future).
    public func cut() { state.setCut(true) }

    /// Passes bytes again, first what was held.
    public func heal() { state.setCut(false) }

    /// Bytes read during the cut and not yet passed on, both ways, on every connection.
    public var heldBytes: Int { state.heldBytes }

    /// Closes the listener and every relayed connection.
    public func close() async {
        try? await listener.close()
        state.closeAll()
    }
}

/// The relay's switch and the halves of its connections.
private final class RelayState: Sendable {
    private struct Inner {
        var cut = false
        var halves: [RelayHalf] = []
    }
    private let inner = Mutex(Inner())

    var isCut: Bool { inner.withLock { $0.cut } }

    func add(_ halves: [RelayHalf]) { inner.withLock { $0.halves += halves } }

    var heldBytes: Int { inner.withLock { $0.halves }.reduce(0) { $0 + $1.heldBytes } }

    func setCut(_ cut: Bool) {
        let halves = inner.withLock { s -> [RelayHalf] in
            s.cut = cut
            return s.halves
        }
        if !cut { for h in halves { h.release() } }
    }

    func closeAll() {
        let halves = inner.withLock { s -> [RelayHalf] in
            defer { s.halves = [] }
            return s.halves
        }
        for h in halves { h.peer.close(promise: nil) }
    }
}

/// One direction of a relayed connection: what its channel reads goes to `peer`, unless the relay is cut.
private final class RelayHalf: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    let peer: Channel
    private let state: RelayState
    /// Bytes read during a cut, in order; only touched on the reading channel's event loop.
    private let held = Mutex<[ByteBuffer]>([])
    private let loop = Mutex<(any EventLoop)?>(nil)

    init(state: RelayState, peer: Channel) {
        self.state = state
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) { loop.withLock { $0 = context.eventLoop } }

    var heldBytes: Int { held.withLock { $0.reduce(0) { $0 + $1.readableBytes } } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let waiting = held.withLock { h -> Bool in
            // Behind held bytes, new ones wait their turn even once the cut is over.
            if state.isCut || !h.isEmpty {
                h.append(bytes)
                return true
            }
            return false
        }
        if waiting {
            if !state.isCut { drain() }
        } else {
            peer.writeAndFlush(bytes, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        peer.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Delivers what was held (the cut ended), on the reading channel's loop so it stays in order.
    func release() {
        guard let loop = loop.withLock({ $0 }) else { return }
        loop.execute { self.drain() }
    }

    private func drain() {
        let out = held.withLock { h -> [ByteBuffer] in
            defer { h = [] }
            return h
        }
        for b in out { peer.write(b, promise: nil) }
        if !out.isEmpty { peer.flush() }
    }
}
