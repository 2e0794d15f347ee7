import EddyTLS
import NIOCore
import NIOPosix
import StreamModel
import Synchronization
import WireProtocol

/// StoreClient speaks the store protocol over one TCP connection. Requests from many tasks share the
/// connection; each gets its answer by request ID, in whatever order the server finishes them.
public final class StoreClient: RequestSender {
    /// The server this client is connected to.
    public let address: ServerAddress
    /// The largest frame the server accepts, from its hello.
    public let maxFrameSize: Int
    /// The server's zone label from its hello (empty when it has none).
    public let zone: String
    private let channel: Channel

    private init(address: ServerAddress, channel: Channel, maxFrameSize: Int, zone: String = "") {
        self.address = address
        self.channel = channel
        self.maxFrameSize = maxFrameSize
        self.zone = zone
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// The default ``connect(to:group:timeout:token:tls:silenceLimit:)`` liveness limit: 3 s, a little over a
    /// cache node's default failure timeout, so a client gives up a silent node about when the ring does.
    public static let defaultSilenceLimit: Duration = .seconds(3)

    /// Connects and performs the hello, with `token` (the bearer token; empty: none) in it; over TLS when `tls` is
    /// given (the server's certificate must be signed by its authority and name `address`'s host).
    /// - Throws: ``EddyError/Code/connectionFailed`` naming the address when it cannot connect (or the TLS
    ///   handshake fails: the message says why),
    ///   ``EddyError/Code/unsupportedVersion`` when the server speaks another protocol version,
    ///   ``EddyError/Code/unauthorized`` when the server requires a token and this one is missing or not valid.
    ///
    /// `silenceLimit` is the connection's liveness check: while a request that expects a prompt answer waits
    /// (anything but a tail read with a wait) and nothing at all has arrived for a third of it, the client sends a
    /// ``Request/ping``; when the silence reaches `silenceLimit`, the connection is closed and every request on it
    /// fails with ``EddyError/Code/connectionFailed`` (callers fail over), instead of each waiting out its own
    /// deadline behind a partition or a hung peer. nil: no check.
    public static func connect(
        to address: ServerAddress, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: Duration = .seconds(5), token: String = "", tls: ClientTLS? = nil,
        silenceLimit: Duration? = StoreClient.defaultSilenceLimit
    ) async throws(EddyError) -> StoreClient {
        let channel: Channel
        let handshake = Mutex<EventLoopFuture<Void>?>(nil)
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(TimeAmount(timeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20)
                )
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            let done = try tls.addHandlers(to: channel.pipeline.syncOperations, host: address.host)
                            handshake.withLock { $0 = done }
                        }
                        let heard = InboundActivity()
                        try channel.pipeline.syncOperations.addHandler(heard)
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(FrameDecoder(copyBodiesUpTo: 16 << 10)))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            ClientHandler(
                                address: address, heard: heard, silenceLimit: silenceLimit.map(TimeAmount.init)))
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            throw EddyError(.connectionFailed, "cannot connect to \(address): \(error)")
        }
        if let done = handshake.withLock({ $0 }) {
            // The handshake's own failure says why (an untrusted certificate, ...): wait for it before the hello.
            do {
                try await done.get()
            } catch {
                try? await channel.close()
                let reason = (error as? EddyError)?.message ?? "\(error)"
                throw EddyError(.connectionFailed, "TLS with \(address) failed: \(reason)")
            }
        }
        let client = StoreClient(address: address, channel: channel, maxFrameSize: Frame.defaultMaxFrameSize)
        do throws(EddyError) {
            guard
                case .helloOK(_, let maxFrameSize, let zone) = try await client.send(
                    .hello(version: protocolVersion, token: token), timeout: timeout)
            else {
                throw EddyError(.malformedFrame, "\(address) answered the hello with something else")
            }
            return StoreClient(address: address, channel: channel, maxFrameSize: Int(maxFrameSize), zone: zone)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Sends a request and waits for its answer. An error answer is thrown.
    /// - Parameter timeout: when given, the request fails with ``EddyError/Code/timedOut`` if no answer came
    ///   within it (a late answer is dropped); the connection stays open.
    ///
    /// Cancelling the calling task gives up the request at once: it fails with ``EddyError/Code/shuttingDown``
    /// ("cancelled"), its late answer is dropped, and the connection stays open (a node's store read whose
    /// readers all left stops holding the node's memory).
    public func send(_ request: Request, timeout: Duration? = nil) async throws(EddyError) -> Response {
        try await send(request, timeout: timeout, submitted: nil)
    }

    /// ``send(_:timeout:)``, and `submitted` runs once the request has been written to the connection (before
    /// its answer): a request submitted after that reaches the server after this one.
    public func send(
        _ request: Request, timeout: Duration?, submitted: (@Sendable () -> Void)?
    ) async throws(EddyError) -> Response {
        let future = submit(request, timeout: timeout)
        submitted?()
        let channel = self.channel
        let result: Result<Response, EddyError> = await withTaskCancellationHandler {
            do throws(EddyError) {
                return .success(try await Self.answer(future))
            } catch {
                return .failure(error)
            }
        } onCancel: {
            channel.writeAndFlush(ClientHandler.Outgoing.cancel(future), promise: nil)
        }
        return try result.get()
    }

    /// Writes `request` now, before returning, so requests submitted one after another from one task reach the
    /// server in that order (appends of one writer must); the future completes with the answer.
    public func submit(_ request: Request, timeout: Duration? = nil) -> EventLoopFuture<Response> {
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let limit = timeout.map { TimeAmount($0) }
        // A write to a connection that closed meanwhile never reaches the handler that would answer or time out
        // the request: fail it here, at once, so the caller fails over instead of waiting out its deadline. (When
        // the handler has the request already, it fails it first; NIO ignores the second completion.)
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { error in
            promise.fail(EddyError(.connectionFailed, "the connection closed before the request was sent: \(error)"))
        }
        channel.writeAndFlush(
            ClientHandler.Outgoing.request(request, promise: promise, timeout: limit), promise: written)
        return promise.futureResult
    }

    /// The answer of a submitted request; an error answer is thrown.
    public static func answer(_ future: EventLoopFuture<Response>) async throws(EddyError) -> Response {
        let response: Response
        do {
            response = try await future.get()
        } catch let error as EddyError {
            throw error
        } catch {
            throw EddyError(.connectionFailed, "request failed: \(error)")
        }
        if case .error(let error) = response { throw error }
        return response
    }

    /// Follows `segment` from `offset` by subscription (cache nodes only: a store answers
    /// ``EddyError/Code/unknownMessageType``, which the first iteration throws).
    /// - Parameters:
    ///   - window: how many bytes the node may send ahead of what the iteration consumed.
    ///   - heartbeat: how often the node says it is alive when nothing arrives.
    public func subscribe(
        _ segment: SegmentID, from offset: UInt64, window: Int = 4 << 20, heartbeat: Duration = .seconds(5)
    ) -> Subscription {
        let window = max(1, min(window, Int(UInt32.max)))
        let ms = UInt32(clamping: max(1, Int64(heartbeat.inSeconds * 1000)))
        return Subscription(
            request: .subscribe(segment: segment, offset: offset, window: UInt32(window), heartbeatMilliseconds: ms),
            window: window, heartbeat: .milliseconds(Int64(ms)), channel: channel)
    }

    /// Closes the connection; requests in progress fail with ``EddyError/Code/connectionFailed``.
    public func close() async {
        try? await channel.close()
    }

    /// No deadline beyond the request's own for tail reads: a plain connection waits as long as asked.
    public func readTimeout(wait: Duration) -> Duration? { nil }
}

/// ClientHandler numbers outgoing requests and completes each one's promise when its answer arrives.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = Outgoing
    typealias OutboundOut = Frame

    enum Outgoing {
        /// A request to send, the promise its answer completes, and its timeout.
        case request(Request, promise: EventLoopPromise<Response>, timeout: TimeAmount?)
        /// Give up the request whose answer completes this future (its caller was cancelled).
        case cancel(EventLoopFuture<Response>)
        /// Open a subscription whose pushed chunks go to the sink.
        case subscribe(Request, SubscriptionSink)
        /// Open a subscription's window by this many bytes.
        case credit(SubscriptionSink, UInt32)
        /// End a subscription (its consumer went away).
        case unsubscribe(SubscriptionSink)
    }

    private var nextID: UInt32 = 1
    /// Requests awaiting their answers, each with its timeout timer (cancelled when the answer comes) and
    /// whether it expects a prompt answer (not a tail read with a wait), which the liveness check watches.
    private var pending: [UInt32: (promise: EventLoopPromise<Response>, timer: LoopTimers.Token?, prompt: Bool)] = [:]
    /// How many of `pending` expect a prompt answer.
    private var promptWaiting = 0
    /// When bytes last arrived (from the handler in front of the frame decoder).
    private let heard: InboundActivity
    /// The liveness limit (``StoreClient/connect(to:group:timeout:token:tls:silenceLimit:)``); nil: none.
    private let silenceLimit: TimeAmount?
    /// Whether the liveness check is scheduled.
    private var watchingSilence = false
    /// Why this side closed the connection (the liveness check), for the requests that fail because of it.
    private var closeReason: EddyError?
    private let address: ServerAddress
    private var context: ChannelHandlerContext?

    init(address: ServerAddress, heard: InboundActivity, silenceLimit: TimeAmount?) {
        self.address = address
        self.heard = heard
        self.silenceLimit = silenceLimit
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }
    /// The timers of the channel's event loop (shared by its connections: cancelling one is cheap).
    private var timers: LoopTimers?
    /// Open subscriptions by request ID.
    private var subscriptions: [UInt32: SubscriptionSink] = [:]

    private func takeID() -> UInt32 {
        let id = nextID
        nextID = nextID == UInt32.max ? 1 : nextID + 1
        return id
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request: Request
        let answer: EventLoopPromise<Response>
        let timeout: TimeAmount?
        switch unwrapOutboundIn(data) {
        case .request(let r, let p, let t):
            (request, answer, timeout) = (r, p, t)
        case .cancel(let future):
            if let id = pending.first(where: { $0.value.promise.futureResult === future })?.key,
                let waiting = take(id)
            {
                waiting.promise.fail(EddyError(.shuttingDown, "the request was cancelled"))
            }
            promise?.succeed()
            return
        case .subscribe(let r, let sink):
            sink.id = takeID()
            subscriptions[sink.id] = sink
            watch(sink, context)
            let frame = MessageCodec.frame(r, id: sink.id, allocator: context.channel.allocator)
            return context.write(wrapOutboundOut(frame), promise: promise)
        case .credit(let sink, let bytes):
            return oneWay(.credit(subscription: sink.id, bytes: bytes), for: sink, context, promise)
        case .unsubscribe(let sink):
            if subscriptions[sink.id] === sink {
                subscriptions[sink.id] = nil
                sink.continuation.finish()
                return oneWay(.unsubscribe(subscription: sink.id), for: sink, context, promise, open: true)
            }
            promise?.succeed()
            return
        }
        let id = takeID()
        var timer: LoopTimers.Token?
        if let timeout {
            let what = request.type
            let timers = self.timers ?? LoopTimers.current(on: context.eventLoop)
            self.timers = timers
            timer = timers.schedule(in: timeout) {
                self.take(id, timerFired: true)?.promise.fail(
                    EddyError(.timedOut, "no answer to \(what) within \(timeout.nanoseconds / 1_000_000) ms"))
            }
        }
        let prompt = Self.expectsPromptAnswer(request)
        pending[id] = (answer, timer, prompt)
        if prompt {
            promptWaiting += 1
            watchSilence(context)
        }
        let frame = MessageCodec.frame(request, id: id, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        do throws(EddyError) {
            let response = try MessageCodec.response(frame)
            if let waiting = take(frame.requestID) {
                waiting.promise.succeed(response)
            } else if let sink = subscriptions[frame.requestID] {
                push(response, to: sink)
            } else if frame.requestID == 0, case .error(let error) = response {
                // An error for no request (ID 0): the server is closing the connection because of it.
                failAll(error)
            }
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(EddyError(.connectionFailed, TLSFailure.describe(error) ?? "connection error: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(closeReason ?? EddyError(.connectionFailed, "the server closed the connection"))
        context.fireChannelInactive()
    }

    /// Writes a one-way message of `sink`'s subscription (never answered: it takes an ID no answer will carry),
    /// or nothing when the subscription is over (`open` says it was, for an unsubscribe that just ended it).
    private func oneWay(
        _ request: Request, for sink: SubscriptionSink, _ context: ChannelHandlerContext,
        _ promise: EventLoopPromise<Void>?, open: Bool = false
    ) {
        guard open || subscriptions[sink.id] === sink else {
            promise?.succeed()
            return
        }
        let frame = MessageCodec.frame(request, id: takeID(), allocator: context.channel.allocator)
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    /// Hands a pushed answer to its subscription; an error, or the end of a sealed segment, ends it.
    private func push(_ response: Response, to sink: SubscriptionSink) {
        sink.lastHeard = .now()
        switch response {
        case .readResult(let offset, let info, let data):
            sink.continuation.yield(SegmentChunk(offset: offset, info: info, data: data))
            if info.sealed && offset + UInt64(data.readableBytes) >= info.length {
                subscriptions[sink.id] = nil
                sink.continuation.finish()
            }
        case .error(let error):
            subscriptions[sink.id] = nil
            sink.continuation.finish(throwing: error)
        default:
            subscriptions[sink.id] = nil
            sink.continuation.finish(
                throwing: EddyError(.malformedFrame, "a subscription was answered with \(response)"))
        }
    }

    /// Fails the subscription when the node stays silent for two heartbeats and a second (checked once per
    /// heartbeat; the second absorbs a busy node's or client's delays).
    private func watch(_ sink: SubscriptionSink, _ context: ChannelHandlerContext) {
        let timers = self.timers ?? LoopTimers.current(on: context.eventLoop)
        self.timers = timers
        timers.schedule(in: sink.heartbeat) { [weak self] in
            guard let self, self.subscriptions[sink.id] === sink else { return }
            let silent = NIODeadline.now() - sink.lastHeard
            guard silent > sink.heartbeat * 2 + .seconds(1) else { return self.watch(sink, context) }
            self.subscriptions[sink.id] = nil
            sink.continuation.finish(
                throwing: EddyError(
                    .timedOut,
                    "the server sent nothing for \(silent.nanoseconds / 1_000_000) ms on a subscription with a "
                        + "\(sink.heartbeat.nanoseconds / 1_000_000) ms heartbeat"))
        }
    }

    /// Removes a pending request (cancelling its timer unless that is what fired).
    private func take(_ id: UInt32, timerFired: Bool = false) -> (
        promise: EventLoopPromise<Response>, timer: LoopTimers.Token?, prompt: Bool
    )? {
        guard let waiting = pending.removeValue(forKey: id) else { return nil }
        if !timerFired, let t = waiting.timer { timers?.cancel(t) }
        if waiting.prompt { promptWaiting -= 1 }
        return waiting
    }

    /// Whether a request's answer should come promptly: everything but a tail read with a wait (which may
    /// rightly stay silent for its wait; and a server whose connection is at its in-flight limit reads no ping
    /// until one of them ends).
    private static func expectsPromptAnswer(_ request: Request) -> Bool {
        switch request {
        case .read(_, _, _, let wait), .forwarded(_, .read(_, _, _, let wait)): wait == 0
        default: true
        }
    }

    /// Starts the liveness check when a prompt request starts waiting: silence counts from now.
    private func watchSilence(_ context: ChannelHandlerContext) {
        guard let limit = silenceLimit, !watchingSilence else { return }
        watchingSilence = true
        heard.last = max(heard.last, .now())
        checkSilence(context, every: .nanoseconds(limit.nanoseconds / 3), limit: limit)
    }

    /// Pings after a third of the limit of silence, and closes the connection at the limit; stops when no
    /// prompt request waits.
    private func checkSilence(_ context: ChannelHandlerContext, every step: TimeAmount, limit: TimeAmount) {
        let timers = self.timers ?? LoopTimers.current(on: context.eventLoop)
        self.timers = timers
        timers.schedule(in: step) { [weak self] in
            guard let self else { return }
            guard self.promptWaiting > 0, self.context != nil else {
                self.watchingSilence = false
                return
            }
            let silent = NIODeadline.now() - self.heard.last
            if silent >= limit {
                self.watchingSilence = false
                // Closed first, so that whoever gets the error sees the connection gone; everything on it fails
                // with this reason rather than "closed".
                self.closeReason =
                    EddyError(
                        .connectionFailed,
                        "\(self.address) sent nothing for \(silent.nanoseconds / 1_000_000) ms while \(self.promptWaiting) "
                            + "request(s) waited and did not answer a ping: the path to it is down")
                context.close(promise: nil)
                self.failAll(self.closeReason!)
                return
            }
            if silent >= step {
                let frame = MessageCodec.frame(.ping, id: self.takeID(), allocator: context.channel.allocator)
                context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
            }
            self.checkSilence(context, every: step, limit: limit)
        }
    }

    private func failAll(_ error: EddyError) {
        let subs = subscriptions
        subscriptions.removeAll()
        for sink in subs.values { sink.continuation.finish(throwing: error) }
        let promises = pending
        pending.removeAll()
        promptWaiting = 0
        for (_, p) in promises {
            if let t = p.timer { timers?.cancel(t) }
            p.promise.fail(error)
        }
    }
}

/// InboundActivity notes when bytes last arrived on a connection, in front of the frame decoder (a large frame
/// that arrives slowly is activity too, long before it is whole).
final class InboundActivity: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// When the last bytes arrived.
    var last: NIODeadline = .now()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        last = .now()
        context.fireChannelRead(data)
    }
}
