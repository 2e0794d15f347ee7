import NIOCore
import StreamModel

/// The limits a server puts on its connections (docs/security.md, "Limits").
public struct ConnectionLimits: Sendable, Equatable {
    /// Connections served at once; the next one is answered `overloaded` and closed.
    public var maxConnections: Int = 16_384
    /// How long one frame may take to arrive once its first byte has: a client that trickles bytes (a slowloris)
    /// is cut off after it, whatever else it does.
    public var frameTimeout: Duration = .seconds(30)
    /// How long a connection may see nothing read nor written before it is closed (tail reads wait at most 60 s
    /// and subscriptions send heartbeats, so a live client is never idle this long).
    public var idleTimeout: Duration = .seconds(600)

    /// The defaults.
    public init() {}

    /// Checks the values.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the limit out of range.
    public func validate() throws(EddyError) {
        guard maxConnections >= 1 else {
            throw EddyError(.invalidArgument, "max connections \(maxConnections) must be at least 1")
        }
        guard frameTimeout >= .milliseconds(100), idleTimeout >= .seconds(1) else {
            throw EddyError(.invalidArgument, "the frame timeout must be at least 0.1 s and the idle timeout 1 s")
        }
    }
}

/// ConnectionGuard is the first handler of every accepted connection, before the frame decoder: it refuses a
/// connection over ``ConnectionLimits/maxConnections``, cuts a client whose frame takes longer than
/// ``ConnectionLimits/frameTimeout`` to arrive (it follows the frames' length fields on the raw bytes), and closes
/// a connection idle for ``ConnectionLimits/idleTimeout``. Each refusal is an error frame with request ID 0 (the
/// client fails what it waits for with that error), then the close; the server's other connections go on.
public final class ConnectionGuard: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let limits: ConnectionLimits
    let open: @Sendable () -> Int
    let onRefusal: @Sendable (EddyError) -> Void
    /// Bytes of the current frame's length field seen so far (0 to 3), and the length being assembled.
    private var lengthBytes = 0
    private var length: UInt32 = 0
    /// Bytes of the current frame still to come after its length field.
    private var remaining = 0
    /// When the current, incomplete frame's first byte arrived.
    private var frameStart: NIODeadline?
    private var lastActivity = NIODeadline.now()
    private var check: Scheduled<Void>?
    private var closed = false
    /// Whether the handlers after this one heard of the connection (a refused one never reaches them).
    private var activated = false
    /// Set for a connection over the limit: the refusal answers its first bytes (the client's hello), so the
    /// client reads it as the answer to what it sent; a client that sends nothing is closed after 5 s (a busy client
    /// may take over a second between its connect and its hello: closed before, it would see a closed connection
    /// instead of the reason).
    private var overLimit: EddyError?

    /// A guard with `limits`; `open` counts the server's connections (this one included), `onRefusal` hears of
    /// each refusal (for the log and the counters).
    public init(
        limits: ConnectionLimits, open: @escaping @Sendable () -> Int,
        onRefusal: @escaping @Sendable (EddyError) -> Void = { _ in }
    ) {
        self.limits = limits
        self.open = open
        self.onRefusal = onRefusal
    }

    public func channelActive(context: ChannelHandlerContext) {
        let count = open()
        if count > limits.maxConnections {
            overLimit = EddyError(
                .overloaded,
                "this server has \(count - 1) connections, the most it takes (--max-connections): try another or later")
            schedule(context, in: .seconds(5))
            return
        }
        schedule(context, in: min(limits.frameTimeout, limits.idleTimeout))
        activated = true
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        closed = true
        if activated { context.fireChannelInactive() }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        if let overLimit { return refuse(context, overLimit) }
        let bytes = unwrapInboundIn(data)
        lastActivity = .now()
        follow(bytes)
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        context.write(data, promise: promise)
    }

    /// Follows the frame boundaries through `bytes`: a frame is its 4-byte length, then that many bytes.
    private func follow(_ bytes: ByteBuffer) {
        var at = bytes.readerIndex
        let end = bytes.writerIndex
        while at < end {
            if remaining > 0 {
                let take = min(remaining, end - at)
                remaining -= take
                at += take
                if remaining == 0 { frameStart = nil }
                continue
            }
            if lengthBytes == 0 && frameStart == nil { frameStart = .now() }
            length = length << 8 | UInt32(bytes.getInteger(at: at, as: UInt8.self)!)
            lengthBytes += 1
            at += 1
            if lengthBytes == 4 {
                remaining = Int(length)
                lengthBytes = 0
                length = 0
                if remaining == 0 { frameStart = nil }  // not a valid frame: the decoder says so
            }
        }
    }

    private func schedule(_ context: ChannelHandlerContext, in delay: Duration) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        check = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay.nanoseconds))) {
            loopBound.value.0.tick(loopBound.value.1)
        }
    }

    private func tick(_ context: ChannelHandlerContext) {
        guard !closed else { return }
        if let overLimit { return refuse(context, overLimit) }
        let now = NIODeadline.now()
        if let start = frameStart, now - start >= .nanoseconds(Int64(limits.frameTimeout.nanoseconds)) {
            return refuse(
                context,
                EddyError(
                    .timedOut,
                    "a frame took longer than \(limits.frameTimeout) to arrive: closing the connection (a slow client)")
            )
        }
        if now - lastActivity >= .nanoseconds(Int64(limits.idleTimeout.nanoseconds)) {
            return refuse(
                context, EddyError(.timedOut, "the connection was idle for \(limits.idleTimeout): closing it"))
        }
        // Look again soon enough for both limits (a quarter of the shorter one, at least 50 ms).
        let next = max(min(limits.frameTimeout, limits.idleTimeout) / 4, .milliseconds(50))
        schedule(context, in: next)
    }

    private func refuse(_ context: ChannelHandlerContext, _ error: EddyError) {
        guard !closed else { return }
        closed = true
        check?.cancel()
        onRefusal(error)
        var out = context.channel.allocator.buffer(capacity: 64)
        try? FrameEncoder().encode(data: MessageCodec.frame(.error(error), id: 0), out: &out)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
