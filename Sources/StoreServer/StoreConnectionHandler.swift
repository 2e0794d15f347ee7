import EddyAuth
import Logging
import NIOCore
import NIOPosix
import SegmentStore
import StreamModel
import WireProtocol

/// StoreConnectionHandler serves one client connection: handshake, then requests dispatched to the store,
/// answers written back as they complete. Event-loop confined; completions from the journal thread or the
/// read pool hop back onto the loop. It stops reading from a client with too many requests in progress
/// (backpressure) and starts again as answers go out.
final class StoreConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = Frame
    typealias OutboundOut = Frame

    private let store: SegmentStore
    private let configuration: StoreServerConfiguration
    private let threadPool: NIOThreadPool
    private let counters: StoreReadCounters
    /// The hello, its token's check and who the connection is.
    private var gate = HelloGate()
    private var state: HelloGate.Phase { gate.phase }
    private var principal: Principal { gate.principal }
    private var inFlight = 0
    private var readHeld = false
    private var flushScheduled = false

    init(
        store: SegmentStore, configuration: StoreServerConfiguration, threadPool: NIOThreadPool,
        counters: StoreReadCounters
    ) {
        self.store = store
        self.configuration = configuration
        self.threadPool = threadPool
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch gate.receive(frame) {
        case .wait: return
        case .refuse(let id, let error): fail(context, id: id, error)
        case .serve(let frame): serve(context, frame)
        case .authenticate(let token, let id):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            configuration.access.authenticate(token, on: context.eventLoop) { result in
                bound.value.0.authenticated(bound.value.1, helloID: id, result)
            }
        }
    }

    /// Ends the hello: answers it and serves what came behind it, or refuses the connection.
    private func authenticated(
        _ context: ChannelHandlerContext, helloID: UInt32, _ result: Result<Principal, EddyError>
    ) {
        guard let waiting = gate.finish(result) else {
            if case .failure(let error) = result {
                configuration.audit.refusedConnection(peer: context.peerDescription, error)
                fail(context, id: helloID, error)
            }
            return
        }
        send(
            context, helloID,
            .helloOK(version: protocolVersion, maxFrameSize: UInt32(configuration.maxFrameSize), zone: ""))
        for frame in waiting where state == .ready { serve(context, frame) }
    }

    /// Serves one request frame of an authenticated connection.
    private func serve(_ context: ChannelHandlerContext, _ frame: Frame) {
        let request: Request
        switch gate.admit(
            frame, access: configuration.access, rates: configuration.rates, audit: configuration.audit,
            peer: { context.peerDescription })
        {
        case .refused(let error, let answer):
            if answer { send(context, frame.requestID, .error(error)) }
            return
        case .admitted(let admitted): request = admitted
        }
        // One-way messages of subscriptions (cache nodes only) are never answered; the store ignores them.
        if case .credit = request { return }
        if case .unsubscribe = request { return }
        inFlight += 1
        dispatch(context, frame.requestID, request)
    }

    private func dispatch(_ context: ChannelHandlerContext, _ id: UInt32, _ request: Request) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let respond: @Sendable (Response) -> Void = { response in
            if bound.eventLoop.inEventLoop {
                bound.value.0.finish(bound.value.1, id, response)
            } else {
                bound.eventLoop.execute { bound.value.0.finish(bound.value.1, id, response) }
            }
        }
        let store = self.store
        switch request {
        case .hello:
            respond(.error(EddyError(.malformedFrame, "hello sent twice")))
        case .listStreams:
            let principal = self.principal
            respond(.streamList(store.listStreams().filter { principal.seesAny($0.name) }))
        case .streamInfo(let name):
            respond(Self.answer { () throws(EddyError) in .streamInfo(try store.info(name)) })
        case .segmentInfo(let segment):
            respond(Self.answer { () throws(EddyError) in .segmentInfo(try store.info(segment)) })
        case .writerState(let segment, let writerID):
            respond(
                Self.answer { () throws(EddyError) in
                    .writerState(try store.lastEventNumber(segment, writerID: writerID))
                })
        case .append(let segment, let writerID, let first, let frames):
            store.append(segment, frames: Array(frames.readableBytesView), writerID: writerID, firstEventNumber: first)
            {
                result in
                switch result {
                case .success(let ack): respond(.appendAck(ack))
                case .failure(let error): respond(.error(error))
                }
            }
        case .ping:
            respond(.ok)
        case .stats:
            respond(.stats(counters.json(store.stats)))
        case .forwarded, .heartbeat, .subscribe, .credit, .unsubscribe, .admin:
            respond(
                .error(EddyError(.unknownMessageType, "\(request.type) is for cache nodes; this is the segment store")))
        case .read(let segment, let offset, let maxBytes, let waitMilliseconds):
            let wait = min(Duration.milliseconds(Int64(waitMilliseconds)), configuration.maxWait)
            let counters = self.counters
            let (rates, principal) = (configuration.rates, self.principal)
            threadPool.submit { _ in
                store.read(segment, from: offset, maxBytes: Int(maxBytes), wait: wait) { result in
                    switch result {
                    case .success(let r):
                        counters.count(segment.stream, asked: maxBytes, bytes: r.data.count)
                        rates.debit(principal, bytes: r.data.count)
                        respond(.readResult(offset: r.offset, info: r.info, data: ByteBuffer(bytes: r.data)))
                    case .failure(let error):
                        respond(.error(error))
                    }
                }
            }
        case .createStream(let name, let segments):
            Task {
                do throws(EddyError) {
                    try await store.createStream(name, segments: segments)
                    respond(.ok)
                } catch { respond(.error(error)) }
            }
        case .deleteStream(let name):
            Task {
                do throws(EddyError) {
                    try await store.deleteStream(name)
                    respond(.ok)
                } catch { respond(.error(error)) }
            }
        case .seal(let segment):
            Task {
                do throws(EddyError) { respond(.segmentInfo(try await store.seal(segment))) } catch {
                    respond(.error(error))
                }
            }
        case .truncate(let segment, let offset):
            Task {
                do throws(EddyError) { respond(.segmentInfo(try await store.truncate(segment, at: offset))) } catch {
                    respond(.error(error))
                }
            }
        }
    }

    private static func answer(_ body: () throws(EddyError) -> Response) -> Response {
        do throws(EddyError) { return try body() } catch { return .error(error) }
    }

    /// Writes an answer, schedules one flush for all answers ready now, and resumes reading when the client
    /// is back under its limit.
    private func finish(_ context: ChannelHandlerContext, _ id: UInt32, _ response: Response) {
        inFlight -= 1
        guard state == .ready else { return }
        send(context, id, response)
        if readHeld && inFlight < configuration.maxInFlightPerConnection {
            readHeld = false
            context.read()
        }
    }

    private func send(_ context: ChannelHandlerContext, _ id: UInt32, _ response: Response) {
        context.write(
            wrapOutboundOut(MessageCodec.frame(response, id: id, allocator: context.channel.allocator)), promise: nil)
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    /// Answers with an error frame and closes: used when the stream of frames cannot be trusted.
    private func fail(_ context: ChannelHandlerContext, id: UInt32, _ error: EddyError) {
        configuration.logger.info(
            "closing connection after a protocol error",
            metadata: ["peer": "\(context.peerDescription)", "error": "\(error)"])
        gate.close()
        let frame = MessageCodec.frame(.error(error), id: id, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard state != .closed else { return }
        if let error = error as? EddyError {
            fail(context, id: 0, error)
        } else {
            configuration.logger.debug("connection error", metadata: ["error": "\(error)"])
            gate.close()
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        gate.close()
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        if inFlight >= configuration.maxInFlightPerConnection {
            readHeld = true
        } else {
            context.read()
        }
    }
}
