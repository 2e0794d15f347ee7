import EddyAuth
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// NodeConnectionHandler serves one connection to a cache node (a client or a peer): the hello, then requests
/// handed to ``NodeCore`` concurrently, answers written back as they finish. Read answers go out as slices of the
/// cached blocks (``FrameWriter``), never copied per connection. The handler stops reading a connection that
/// has too many requests in progress or whose socket is not draining (a slow reader), so a slow client costs
/// the node a bounded amount of memory; when the connection closes, its requests in progress are cancelled.
///
/// Subscriptions (``Request/subscribe(segment:offset:window:heartbeatMilliseconds:)``) are tail reads the
/// connection runs again by itself after each answer, while the subscriber's window is open and the socket
/// drains: a delivery costs one frame out and nothing in.
final class NodeConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = Never
    typealias OutboundOut = OutboundFrame

    private let core: NodeCore
    private let reader: ReaderState
    /// The hello, its token's check and who the connection is (other nodes are their service identity).
    private var gate = HelloGate()
    private var state: HelloGate.Phase { gate.phase }
    private var principal: Principal { gate.principal }
    private var tasks: [UInt32: Task<Void, Never>] = [:]
    /// The last append of each lane (segment and writer) on this connection: its request ID, and a future that
    /// completes once it has been handed to the store's (or the owner's) connection, or has finished. The next
    /// append of the lane starts when that future completes, so a writer's pipelined batches reach the store in
    /// the order they arrived (tasks on a multi-threaded pool may otherwise overtake each other, and the store
    /// keeps the order of one connection) while several of them are in flight at once. Lanes are per writer
    /// because a connection between nodes carries the forwarded appends of many writers. When a batch fails, the
    /// ones behind it still go on: the store refuses a batch past its writer's next event number
    /// (`eventNumberGap`, retriable), and the client sends it again after the failed one.
    private var lastAppend: [AppendLane: (id: UInt32, sent: EventLoopFuture<Void>)] = [:]
    /// Tail reads parked in the core (no task): see ``NodeCore/parkRead(_:offset:maxBytes:wait:reader:forwardedBy:on:_:)``.
    private var parked = 0
    private var readHeld = false
    private var flushScheduled = false
    /// The context to flush while a flush is scheduled.
    private var flushContext: ChannelHandlerContext?
    /// The connection's subscriptions by the ID of the request that opened them.
    private var subscriptions: [UInt32: Subscription] = [:]
    /// Whether some subscription waits for the socket to drain.
    private var subscriptionsStalled = false

    /// Where a subscription is: its next offset, how many bytes its subscriber's window still takes, and whether
    /// a read of it is out (parked or running).
    private final class Subscription {
        let segment: SegmentID
        var offset: UInt64
        var window: Int64
        let heartbeatMilliseconds: UInt32
        var reading = false
        /// Unsubscribed while a read was out: that read's answer is dropped.
        var ended = false
        /// How it waits while it follows without a read request of its own: at the tail of a segment this node
        /// owns (the segment and the waiter's ID there), or parked in the core (on a shared forward to the owner).
        var following: Following?
        /// What wakes it while it follows, made once: it delivers what arrived (``NodeConnectionHandler/deliver(_:_:_:)``).
        var respond: (@Sendable (ParkedRead.Outcome) -> Void)?
        /// When the subscriber was last sent something, or subscribed (uptime nanoseconds): a heartbeat is due
        /// after `heartbeatMilliseconds` of silence.
        var lastSent = NIODeadline.now().uptimeNanoseconds
        /// Whether the heartbeat timer of a following subscription is set.
        var heartbeatSet = false

        enum Following {
            case tail(OwnedSegment, waiter: Int)
            case parked
        }

        init(segment: SegmentID, offset: UInt64, window: UInt32, heartbeatMilliseconds: UInt32) {
            self.segment = segment
            self.offset = offset
            self.window = Int64(window)
            self.heartbeatMilliseconds = heartbeatMilliseconds
        }
    }

    init(core: NodeCore, readerID: Int) {
        self.core = core
        self.reader = ReaderState(id: readerID)
    }

    func channelActive(context: ChannelHandlerContext) {
        core.counters.connections.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch gate.receive(frame) {
        case .wait: return
        case .refuse(let id, let error): fail(context, id: id, error)
        case .serve(let frame): serve(context, frame)
        case .authenticate(let token, let id):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            core.configuration.access.authenticate(token, on: context.eventLoop) { result in
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
                core.configuration.audit.refusedConnection(peer: context.peerDescription, error)
                fail(context, id: helloID, error)
            }
            return
        }
        send(
            context,
            OutboundFrame(
                MessageCodec.frame(
                    .helloOK(
                        version: protocolVersion, maxFrameSize: UInt32(Frame.defaultMaxFrameSize),
                        zone: core.configuration.zone), id: helloID),
                allocator: context.channel.allocator))
        for frame in waiting where state == .ready { serve(context, frame) }
    }

    /// Serves one frame of an authenticated connection.
    private func serve(_ context: ChannelHandlerContext, _ frame: Frame) {
        let configuration = core.configuration
        let request: Request
        switch gate.admit(
            frame, access: configuration.access, rates: configuration.rates, audit: configuration.audit,
            peer: { context.peerDescription })
        {
        case .refused(let error, let answer):
            if answer { respond(context, frame.requestID, .error(error)) }
            return
        case .admitted(let admitted): request = admitted
        }
        switch request {
        case .ping:
            // Answered here, ahead of everything the connection waits for: it says the path is up.
            respond(context, frame.requestID, .ok)
        case .subscribe(let segment, let offset, let window, let heartbeat):
            subscribe(context, frame.requestID, segment, offset, window: window, heartbeat: heartbeat)
        case .credit(let id, let bytes):
            guard let sub = subscriptions[id] else { return }
            sub.window = min(sub.window + Int64(bytes), Int64(UInt32.max))
            advance(context, id)
        case .unsubscribe(let id):
            guard let sub = subscriptions[id] else { return }
            if case .tail(let seg, let waiter) = sub.following, seg.unpark(waiter) {
                stopFollowing(sub)
                endSubscription(id)
            } else if sub.reading {
                // Gone for the subscriber now; the read that is out drops its answer when it ends.
                sub.ended = true
                core.counters.subscriptions.subtract(1, ordering: .relaxed)
                tasks[id]?.cancel()
            } else {
                endSubscription(id)
            }
        default:
            if !park(context, frame.requestID, request) { dispatch(context, frame.requestID, request) }
        }
    }

    // MARK: - Subscriptions

    private func subscribe(
        _ context: ChannelHandlerContext, _ id: UInt32, _ segment: SegmentID, _ offset: UInt64, window: UInt32,
        heartbeat: UInt32
    ) {
        let limit = core.configuration.maxInFlightPerConnection
        guard subscriptions[id] == nil else {
            return respond(context, id, .error(EddyError(.invalidArgument, "subscription \(id) is already open")))
        }
        guard subscriptions.count < limit else {
            return respond(
                context, id,
                .error(EddyError(.overloaded, "this connection already has \(limit) subscriptions, the most it may")))
        }
        guard window > 0, heartbeat > 0 else {
            return respond(
                context, id, .error(EddyError(.invalidArgument, "a subscription needs a window and a heartbeat")))
        }
        subscriptions[id] = Subscription(
            segment: segment, offset: offset, window: window, heartbeatMilliseconds: heartbeat)
        core.counters.subscriptions.add(1, ordering: .relaxed)
        advance(context, id)
    }

    /// Starts the next read of subscription `id` if its window is open, the socket drains and none is out.
    private func advance(_ context: ChannelHandlerContext, _ id: UInt32) {
        guard state == .ready, let sub = subscriptions[id], !sub.reading, !sub.ended, sub.window > 0 else { return }
        guard context.channel.isWritable else {
            subscriptionsStalled = true
            return
        }
        sub.reading = true
        if follow(context, id, sub) { return }
        // At most what the window takes, so a subscriber is never sent more than its window. Subscribers whose
        // windows are open wider than one answer ask alike, so their reads coalesce into one forward.
        let request = Request.read(
            segment: sub.segment, offset: sub.offset, maxBytes: UInt32(min(1 << 20, sub.window)),
            waitMilliseconds: sub.heartbeatMilliseconds)
        if !park(context, id, request) { dispatch(context, id, request) }
    }

    /// Lets subscription `id` wait for its next bytes without a read request of its own: the fast path of a
    /// fan-out. When this node owns the segment and the subscription is at its end, it files a waiter at the
    /// segment's tail: the bytes of an append wake every waiter (one hop per event loop for all of them) and
    /// ``deliver(_:_:_:)`` writes them as a push and files the same waiter again (no read, task, timer, closure or
    /// budget charge per delivery; a heartbeat timer only after a heartbeat interval of silence). Otherwise it
    /// parks in the core, on a shared forward to the owner when this node does not own the segment, and the
    /// forward's answer is pushed as it comes. Anything else (bytes not at the tail, a seal, a truncation) goes
    /// through the read path. Returns false when it did not wait (the caller reads).
    private func follow(_ context: ChannelHandlerContext, _ id: UInt32, _ sub: Subscription) -> Bool {
        if sub.respond == nil {
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            sub.respond = { outcome in bound.value.0.deliver(bound.value.1, id, outcome) }
        }
        guard let respond = sub.respond else { return false }
        if let seg = core.followableTail(sub.segment, at: sub.offset),
            let waiter = seg.park(at: sub.offset, ParkedRead(eventLoop: context.eventLoop, wake: respond))
        {
            sub.following = .tail(seg, waiter: waiter)
            core.followed(seg)
            if !sub.heartbeatSet { scheduleHeartbeat(context, id, sub) }
        } else if core.parkRead(
            sub.segment, offset: sub.offset, maxBytes: Int(min(1 << 20, sub.window)),
            wait: .milliseconds(Int64(sub.heartbeatMilliseconds)), reader: reader, forwardedBy: nil,
            on: context.eventLoop, respond)
        {
            sub.following = .parked
        } else {
            return false
        }
        parked += 1
        return true
    }

    /// Delivers to following subscription `id` what woke it, then follows on (or reads, when what changed is
    /// not bytes at its offset).
    private func deliver(_ context: ChannelHandlerContext, _ id: UInt32, _ outcome: ParkedRead.Outcome) {
        guard let sub = subscriptions[id], let following = sub.following else { return }
        stopFollowing(sub)
        if sub.ended {
            subscriptions[id] = nil
            return
        }
        guard state == .ready else { return }
        switch (following, outcome) {
        case (.tail(let seg, _), _):
            if sub.window > 0, context.channel.isWritable,
                let answer = seg.tailSlices(from: sub.offset, maxBytes: Int(min(1 << 20, sub.window))),
                answer.count > 0
            {
                // Tail bytes are the segment's own chunks, shared by every subscriber: not charged to the
                // in-flight budget (a connection whose socket does not drain stops taking them).
                core.deliveredTail(answer, reader: reader)
                if push(context, id, sub, answer) { return }
            }
        case (.parked, .answer(let answer)):
            // A shared answer (its buffers are shared by every read parked on it), or a heartbeat: empty.
            core.counters.bytesServed.add(answer.count, ordering: .relaxed)
            if push(context, id, sub, answer) { return }
        case (.parked, .failed(let error)):
            respond(context, id, .error(error))
            return endSubscription(id)
        case (.parked, .changed):
            break
        }
        advance(context, id)
        resumeReadingIfAllowed(context)
    }

    /// Ends the wait of a following subscription whose waiter was woken or taken back: no read of it is out.
    private func stopFollowing(_ sub: Subscription) {
        sub.following = nil
        parked -= 1
        sub.reading = false
    }

    /// Sends `answer` to subscription `id` as a push and moves it on; returns true when that ended it (the end of
    /// a sealed segment).
    @discardableResult
    private func push(_ context: ChannelHandlerContext, _ id: UInt32, _ sub: Subscription, _ answer: ReadAnswer)
        -> Bool
    {
        let count = answer.count
        if count > 0 { core.configuration.rates.debit(principal, bytes: count) }
        send(
            context,
            MessageCodec.readResultFrame(
                id: id, offset: answer.offset, info: answer.info, slices: answer.slices,
                allocator: context.channel.allocator))
        sub.offset += UInt64(count)
        sub.window -= Int64(count)
        sub.lastSent = NIODeadline.now().uptimeNanoseconds
        guard answer.info.sealed && sub.offset >= answer.info.length else { return false }
        endSubscription(id)
        return true
    }

    /// Sends following subscription `id` an empty push (its heartbeat: the segment's state) once it has had
    /// nothing for its heartbeat interval, checking again at the next point that could be due.
    private func scheduleHeartbeat(_ context: ChannelHandlerContext, _ id: UInt32, _ sub: Subscription) {
        sub.heartbeatSet = true
        let interval = UInt64(sub.heartbeatMilliseconds) * 1_000_000
        let due = sub.lastSent + interval
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        LoopTimers.current(on: context.eventLoop).schedule(at: .uptimeNanoseconds(due)) {
            let (handler, context) = bound.value
            guard handler.state == .ready, let sub = handler.subscriptions[id], !sub.ended else { return }
            sub.heartbeatSet = false
            // While a read is out instead, that read's own wait gives the heartbeat: the timer stops until the
            // subscription follows the tail again.
            guard case .tail(let seg, let waiter) = sub.following else { return }
            if NIODeadline.now().uptimeNanoseconds >= sub.lastSent + interval, let info = seg.info, seg.unpark(waiter) {
                handler.stopFollowing(sub)
                if handler.push(context, id, sub, ReadAnswer(info: info, offset: sub.offset, slices: [])) { return }
                handler.advance(context, id)
            }
            if case .tail = sub.following, !sub.heartbeatSet { handler.scheduleHeartbeat(context, id, sub) }
        }
    }

    /// Books an answer (`delivered`: its size and the segment's state; nil for an error) against the
    /// subscription `id` when there is one. Returns false when the answer must be dropped (unsubscribed).
    private func book(_ id: UInt32, _ delivered: (count: Int, info: SegmentInfo)?) -> Bool {
        guard let sub = subscriptions[id] else { return true }
        sub.reading = false
        sub.lastSent = NIODeadline.now().uptimeNanoseconds
        if sub.ended {
            subscriptions[id] = nil
            return false
        }
        guard let delivered else {
            endSubscription(id)  // an error ends it
            return true
        }
        sub.offset += UInt64(delivered.count)
        sub.window -= Int64(delivered.count)
        if delivered.info.sealed && sub.offset >= delivered.info.length { endSubscription(id) }
        return true
    }

    private func endSubscription(_ id: UInt32) {
        guard subscriptions.removeValue(forKey: id) != nil else { return }
        core.counters.subscriptions.subtract(1, ordering: .relaxed)
    }

    private func dispatch(_ context: ChannelHandlerContext, _ id: UInt32, _ request: Request) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let core = self.core
        let reader = self.reader
        let principal = self.principal
        let allocator = context.channel.allocator
        let lane = AppendLane(of: request)
        let previous = lane.flatMap { lastAppend[$0]?.sent }
        let sent = lane.map { _ in OnceSignal(context.eventLoop.makePromise(of: Void.self)) }
        let started = NIODeadline.now().uptimeNanoseconds
        core.counters.inFlight.add(1, ordering: .relaxed)
        let submitted: (@Sendable () -> Void)? = sent.map { signal in { @Sendable in signal.fire() } }
        let task = Task {
            if let previous { try? await previous.get() }
            let result = await NodeConnectionHandler.answer(
                core, request, id: id, reader: reader, principal: principal, allocator: allocator,
                submitted: submitted)
            sent?.fire()
            core.timers?.record(request, since: started)
            core.counters.inFlight.subtract(1, ordering: .relaxed)
            bound.eventLoop.execute {
                if let lane { bound.value.0.endAppend(lane, id: id) }
                bound.value.0.finish(
                    bound.value.1, id, result.frame, charged: result.charged, delivered: result.delivered)
            }
        }
        tasks[id] = task
        if let lane, let sent { lastAppend[lane] = (id, sent.future) }
        if inFlight >= core.configuration.maxInFlightPerConnection { readHeld = true }
    }

    /// Forgets a finished append when it is still the last of its lane.
    private func endAppend(_ lane: AppendLane, id: UInt32) {
        if lastAppend[lane]?.id == id { lastAppend[lane] = nil }
    }

    private var inFlight: Int { tasks.count + parked }

    /// Parks a tail read in the core when it can (see ``NodeCore/parkRead(_:offset:maxBytes:wait:reader:forwardedBy:on:_:)``):
    /// its answer is written from the event loop when it comes, without a task.
    private func park(_ context: ChannelHandlerContext, _ id: UInt32, _ request: Request) -> Bool {
        let view: RingView?
        let segment: SegmentID
        let offset: UInt64
        let maxBytes: UInt32
        let wait: UInt32
        switch request {
        case .read(let s, let o, let m, let w):
            (view, segment, offset, maxBytes, wait) = (nil, s, o, m, w)
        case .forwarded(let v, .read(let s, let o, let m, let w)):
            (view, segment, offset, maxBytes, wait) = (v, s, o, m, w)
        default:
            return false
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let started = NIODeadline.now()
        let accepted = core.parkRead(
            segment, offset: offset, maxBytes: Int(maxBytes), wait: .milliseconds(Int64(wait)), reader: reader,
            forwardedBy: view, on: context.eventLoop
        ) { outcome in
            let (handler, context) = bound.value
            handler.parked -= 1
            guard handler.state == .ready else { return }
            switch outcome {
            case .answer(let answer):
                handler.core.timers?.record(request, since: started.uptimeNanoseconds)
                handler.finishParked(context, id, request, answer)
            case .failed(let error):
                handler.core.timers?.record(request, since: started.uptimeNanoseconds)
                handler.finish(
                    context, id,
                    OutboundFrame(MessageCodec.frame(.error(error), id: id), allocator: context.channel.allocator),
                    charged: 0, delivered: nil)
            case .changed:
                // Run the read through the full path, for what is left of its wait.
                let left = max(0, Int64(wait) - (NIODeadline.now() - started).nanoseconds / 1_000_000)
                let again = Request.read(
                    segment: segment, offset: offset, maxBytes: maxBytes, waitMilliseconds: UInt32(left))
                handler.dispatch(context, id, view.map { .forwarded($0, again) } ?? again)
            }
        }
        guard accepted else { return false }
        parked += 1
        if inFlight >= core.configuration.maxInFlightPerConnection { readHeld = true }
        return true
    }

    /// Writes the answer of a parked read, charged to the node's budget; one that finds no room right away runs
    /// through the full path (which queues for room, with a timeout).
    private func finishParked(_ context: ChannelHandlerContext, _ id: UInt32, _ request: Request, _ answer: ReadAnswer)
    {
        guard state == .ready else { return }
        let charged = Int64(answer.count)
        guard charged == 0 || core.budget.tryAcquire(charged) else { return dispatch(context, id, request) }
        core.counters.bytesServed.add(answer.count, ordering: .relaxed)
        let frame = MessageCodec.readResultFrame(
            id: id, offset: answer.offset, info: answer.info, slices: answer.slices,
            allocator: context.channel.allocator)
        finish(context, id, frame, charged: charged, delivered: (answer.count, answer.info))
    }

    /// What finishes a request: the frame answering it, the bytes it holds of the node's budget, and for a
    /// read its size and the segment's state.
    private struct Finished {
        var frame: OutboundFrame
        var charged: Int64 = 0
        var delivered: (count: Int, info: SegmentInfo)? = nil
    }

    /// The frame answering `request`, and the bytes it holds of the node's budget (reads).
    private static func answer(
        _ core: NodeCore, _ request: Request, id: UInt32, reader: ReaderState, principal: Principal,
        allocator: ByteBufferAllocator, submitted: (@Sendable () -> Void)? = nil
    ) async -> Finished {
        let result: Result<(ReadAnswer, Int64)?, EddyError>
        do throws(EddyError) {
            if let read = try await Self.read(core, request, reader: reader) {
                result = .success((read, try await charge(core, read)))
            } else {
                result = .success(nil)
            }
        } catch {
            result = .failure(error)
        }
        switch result {
        case .success(let (read, charged)?):
            core.counters.bytesServed.add(read.count, ordering: .relaxed)
            let frame = MessageCodec.readResultFrame(
                id: id, offset: read.offset, info: read.info, slices: read.slices, allocator: allocator)
            return Finished(frame: frame, charged: charged, delivered: (read.count, read.info))
        case .success(nil):
            var response = await core.handle(request, submitted: submitted)
            if case .streamList(let all) = response {
                // A listing shows only the streams the principal has some role on.
                response = .streamList(all.filter { principal.seesAny($0.name) })
            }
            return Finished(frame: OutboundFrame(MessageCodec.frame(response, id: id), allocator: allocator))
        case .failure(let error):
            return Finished(frame: OutboundFrame(MessageCodec.frame(.error(error), id: id), allocator: allocator))
        }
    }

    /// Runs a read (a client's or a forwarded one); nil for any other request.
    private static func read(_ core: NodeCore, _ request: Request, reader: ReaderState) async throws(EddyError)
        -> ReadAnswer?
    {
        switch request {
        case .read(let segment, let offset, let maxBytes, let wait):
            return try await core.read(
                segment, offset: offset, maxBytes: Int(maxBytes), wait: .milliseconds(Int64(wait)), reader: reader)
        case .forwarded(let view, .read(let segment, let offset, let maxBytes, let wait)):
            return try await core.readForwarded(
                view, segment, offset: offset, maxBytes: Int(maxBytes), wait: .milliseconds(Int64(wait)), reader: reader
            )
        default:
            return nil
        }
    }

    /// Takes an answer's bytes from the node's bytes-in-flight budget until the socket has taken them: the
    /// budget bounds the memory that answers hold (a block evicted while answers to slow clients still
    /// reference it lives until they are written).
    private static func charge(_ core: NodeCore, _ answer: ReadAnswer) async throws(EddyError) -> Int64 {
        let n = Int64(answer.count)
        guard n > 0 else { return 0 }
        try await core.budget.acquire(n, timeout: core.configuration.requestTimeout)
        return n
    }

    private func finish(
        _ context: ChannelHandlerContext, _ id: UInt32, _ frame: OutboundFrame, charged: Int64,
        delivered: (count: Int, info: SegmentInfo)?
    ) {
        tasks.removeValue(forKey: id)
        guard state == .ready, book(id, delivered) else {
            core.budget.release(charged)
            resumeReadingIfAllowed(context)
            return
        }
        if let delivered { core.configuration.rates.debit(principal, bytes: delivered.count) }
        let promise: EventLoopPromise<Void>? = charged > 0 ? context.eventLoop.makePromise() : nil
        if let promise {
            let budget = core.budget
            promise.futureResult.whenComplete { _ in budget.release(charged) }
        }
        send(context, frame, promise: promise)
        advance(context, id)
        resumeReadingIfAllowed(context)
    }

    private func respond(_ context: ChannelHandlerContext, _ id: UInt32, _ response: Response) {
        send(context, OutboundFrame(MessageCodec.frame(response, id: id), allocator: context.channel.allocator))
    }

    private func send(_ context: ChannelHandlerContext, _ frame: OutboundFrame, promise: EventLoopPromise<Void>? = nil)
    {
        context.write(wrapOutboundOut(frame), promise: promise)
        guard !flushScheduled else { return }
        flushScheduled = true
        flushContext = context
        LoopFlusher.current(on: context.eventLoop).add(self)
    }

    /// Flushes what ``send(_:_:promise:)`` wrote (called by the loop's ``LoopFlusher``).
    func flushNow() {
        flushScheduled = false
        flushContext?.flush()
        flushContext = nil
    }

    private func resumeReadingIfAllowed(_ context: ChannelHandlerContext) {
        if readHeld && inFlight < core.configuration.maxInFlightPerConnection && context.channel.isWritable {
            readHeld = false
            context.read()
        }
    }

    /// Answers with an error frame and closes: used when the stream of frames cannot be trusted.
    private func fail(_ context: ChannelHandlerContext, id: UInt32, _ error: EddyError) {
        core.configuration.logger.info(
            "closing connection after a protocol error",
            metadata: ["peer": "\(context.peerDescription)", "error": "\(error)"])
        close(context)
        let frame = OutboundFrame(MessageCodec.frame(.error(error), id: id), allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    private func close(_ context: ChannelHandlerContext) {
        gate.close()
        for sub in subscriptions.values {
            if case .tail(let seg, let waiter) = sub.following, seg.unpark(waiter) { parked -= 1 }
            sub.following = nil
        }
        for t in tasks.values { t.cancel() }
        tasks.removeAll()
        core.counters.subscriptions.subtract(subscriptions.values.count { !$0.ended }, ordering: .relaxed)
        subscriptions.removeAll()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard state != .closed else { return }
        if let error = error as? EddyError {
            fail(context, id: 0, error)
        } else {
            close(context)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if state != .closed { close(context) }
        core.counters.connections.subtract(1, ordering: .relaxed)
        if core.configuration.readerHints { core.cache.readerLeft(reader.id) }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && subscriptionsStalled {
            subscriptionsStalled = false
            for id in subscriptions.keys { advance(context, id) }
        }
        if context.channel.isWritable { resumeReadingIfAllowed(context) }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if inFlight >= core.configuration.maxInFlightPerConnection || !context.channel.isWritable {
            readHeld = true
        } else {
            context.read()
        }
    }
}

/// The appends of one writer to one segment: the unit whose order a connection keeps.
struct AppendLane: Hashable {
    var segment: SegmentID
    var writerID: String

    /// The lane of an append (a client's or a forwarded one); nil for any other request.
    init?(of request: Request) {
        switch request {
        case .append(let segment, let writerID, _, _), .forwarded(_, .append(let segment, let writerID, _, _)):
            self.segment = segment
            self.writerID = writerID
        default:
            return nil
        }
    }
}

/// A promise completed once, by whichever of its callers comes first.
final class OnceSignal: Sendable {
    private let promise: EventLoopPromise<Void>
    private let fired = Atomic<Bool>(false)

    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }

    var future: EventLoopFuture<Void> { promise.futureResult }

    func fire() {
        if !fired.exchange(true, ordering: .acquiringAndReleasing) { promise.succeed() }
    }
}
