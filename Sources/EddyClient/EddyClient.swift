import EddyTLS
import NIOCore
import NIOPosix
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// EddyClient talks to a ring of cache nodes (or to a store) through the nearest server, and fails over.
///
/// At connect it measures the round trip (connect and hello) to every seed, prefers servers of its own zone,
/// then the lowest round trip, and talks to the first. A request that fails because of the path (the
/// connection broke, a deadline passed, the ring was changing: ``EddyError/isRetriable``) is sent again, to the
/// next server when the connection is gone, until the request's deadline. Reads and metadata requests are
/// idempotent; appends are made exactly-once by the writer ID and event numbers they carry.
public final class EddyClient: RequestSender {
    /// Settings of a client.
    public struct Configuration: Sendable {
        /// Seed servers (`--servers`).
        public var servers: [ServerAddress]
        /// The client's zone (`--zone`); servers of the same zone come first.
        public var zone: String = ""
        /// How long one connection attempt may take.
        public var connectTimeout: Duration = .seconds(2)
        /// How long a request may take, retries and failovers included (tail waits add their wait).
        public var requestTimeout: Duration = .seconds(15)
        /// How long a connection may stay silent while a request waits for a prompt answer before the client
        /// gives the server up and fails over (a ping is sent after a third of it); nil: no such check, a request
        /// waits for its own deadline (``StoreClient/connect(to:group:timeout:token:tls:silenceLimit:)``).
        public var silenceLimit: Duration? = StoreClient.defaultSilenceLimit
        /// Use the servers in the order given instead of measuring them (benchmarks spread readers this way).
        public var inOrder = false
        /// The bearer token sent in every connection's hello (`--token` or `EDDY_TOKEN`); empty: none, for servers
        /// with authentication off.
        public var token: String = ""
        /// TLS to the servers (`--tls-ca`); nil: plain TCP.
        public var tls: ClientTLS?

        /// Creates a configuration.
        public init(servers: [ServerAddress]) { self.servers = servers }
    }

    /// The configuration in use.
    public let configuration: Configuration
    private let group: EventLoopGroup
    private struct State {
        var order: [ServerAddress]
        var current: StoreClient?
        var failovers = 0
    }
    private let state: Mutex<State>

    private init(configuration: Configuration, order: [ServerAddress], current: StoreClient?, group: EventLoopGroup) {
        self.configuration = configuration
        self.group = group
        state = Mutex(State(order: order, current: current))
    }

    /// Measures the seeds and connects to the nearest.
    /// - Throws: ``EddyError/Code/connectionFailed`` naming every seed when none answers.
    public static func connect(
        _ configuration: Configuration, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(EddyError) -> EddyClient {
        guard !configuration.servers.isEmpty else { throw EddyError(.invalidArgument, "no servers given") }
        if configuration.servers.count == 1 || configuration.inOrder {
            // The given order: the first server that answers.
            var failures: [String] = []
            for (i, server) in configuration.servers.enumerated() {
                do {
                    let c = try await StoreClient.connect(
                        to: server, group: group, timeout: configuration.connectTimeout, token: configuration.token,
                        tls: configuration.tls, silenceLimit: configuration.silenceLimit)
                    let order = Array(configuration.servers[i...] + configuration.servers[..<i])
                    return EddyClient(configuration: configuration, order: order, current: c, group: group)
                } catch {
                    if configuration.servers.count == 1 { throw error }
                    failures.append(error.message)
                }
            }
            throw EddyError(.connectionFailed, "cannot connect to any server: \(failures.joined(separator: "; "))")
        }
        let probes = await withTaskGroup(of: (ServerAddress, StoreClient?, Duration, EddyError?).self) { group2 in
            for server in configuration.servers {
                group2.addTask {
                    let start = ContinuousClock.now
                    do {
                        let c = try await StoreClient.connect(
                            to: server, group: group, timeout: configuration.connectTimeout,
                            token: configuration.token, tls: configuration.tls, silenceLimit: configuration.silenceLimit
                        )
                        return (server, c, ContinuousClock.now - start, nil)
                    } catch {
                        return (
                            server, nil, ContinuousClock.now - start,
                            (error as? EddyError) ?? EddyError(.connectionFailed, "\(server): \(error)")
                        )
                    }
                }
            }
            var all: [(ServerAddress, StoreClient?, Duration, EddyError?)] = []
            for await p in group2 { all.append(p) }
            return all
        }
        let ranked = probes.sorted { a, b in
            let za = a.1 != nil && !configuration.zone.isEmpty && a.1!.zone == configuration.zone
            let zb = b.1 != nil && !configuration.zone.isEmpty && b.1!.zone == configuration.zone
            if (a.1 != nil) != (b.1 != nil) { return a.1 != nil }
            if za != zb { return za }
            return a.2 < b.2
        }
        let best = ranked.first?.1
        for p in ranked.dropFirst() { if let c = p.1 { await c.close() } }
        guard let best else {
            // Servers that answered and refused (a token they do not take, a version they do not speak) say why;
            // that is not a path to try again.
            if let refusal = probes.compactMap({ $0.3 }).first(where: {
                !$0.isRetriable && $0.code != .connectionFailed
            }) {
                throw refusal
            }
            throw EddyError(
                .connectionFailed,
                "cannot connect to any of \(configuration.servers.map(\.description).joined(separator: ", "))")
        }
        return EddyClient(configuration: configuration, order: ranked.map(\.0), current: best, group: group)
    }

    /// The server in use now.
    public var server: ServerAddress { state.withLock { $0.order[0] } }

    /// How many times the client moved to another server.
    public var failovers: Int { state.withLock { $0.failovers } }

    /// Closes the connection.
    public func close() async {
        let c = state.withLock { s in
            defer { s.current = nil }
            return s.current
        }
        await c?.close()
    }

    /// Sends `request`, retrying and failing over until `timeout` (default: the configured request timeout).
    /// An error answer that is not retriable is thrown at once.
    public func send(_ request: Request, timeout: Duration? = nil) async throws(EddyError) -> Response {
        let deadline = ContinuousClock.now + (timeout ?? configuration.requestTimeout)
        var lastError = EddyError(.timedOut, "no server answered in time")
        var pause = Duration.milliseconds(20)
        while ContinuousClock.now < deadline {
            let client: StoreClient
            do {
                client = try await connection()
            } catch {
                lastError = error
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(500))
                continue
            }
            do {
                let left = deadline - ContinuousClock.now
                return try await client.send(request, timeout: max(left, .milliseconds(1)))
            } catch  where error.isRetriable {
                lastError = error
                if error.code == .connectionFailed || !client.isActive {
                    rotate(after: client)
                } else {
                    try? await Task.sleep(for: pause)
                    pause = min(pause * 2, .milliseconds(500))
                }
            }
        }
        throw lastError
    }

    /// The connection in use, or a new one to the first server of the order; a failed connect moves the order past
    /// that server.
    private func connection() async throws(EddyError) -> StoreClient {
        if let c = state.withLock({ $0.current }), c.isActive { return c }
        let target = state.withLock { $0.order[0] }
        let c: StoreClient
        do {
            c = try await StoreClient.connect(
                to: target, group: group, timeout: configuration.connectTimeout, token: configuration.token,
                tls: configuration.tls, silenceLimit: configuration.silenceLimit)
        } catch {
            skip(target)
            throw error
        }
        let stale = state.withLock { s -> StoreClient? in
            defer { s.current = c }
            return s.current
        }
        if let stale { Task { await stale.close() } }
        return c
    }

    /// Moves past `target` after a connect to it failed, unless another request moved on already: concurrent
    /// requests that all fail to reach one server move the order once, not once each (with two servers, an even
    /// number of moves would bring them all back to the dead one).
    private func skip(_ target: ServerAddress) {
        state.withLock { s in
            guard s.order.count > 1, s.order[0] == target else { return }
            s.order.append(s.order.removeFirst())
            s.failovers += 1
        }
    }

    /// Moves to the next server after `client` failed.
    private func rotate(after client: StoreClient) {
        let dead = state.withLock { s -> StoreClient? in
            if s.current !== client { return nil }  // another request moved on already
            let old = s.current
            s.current = nil
            if s.order.count > 1 { s.order.append(s.order.removeFirst()) }
            s.failovers += 1
            return old
        }
        if let dead { Task { await dead.close() } }
    }

    /// Follows one segment from `cursor` and hands every batch of new events, with the segment's state, to
    /// `deliver`, until `deliver` returns false or the end of a sealed segment was delivered; returns the cursor
    /// after the last delivered event.
    ///
    /// A cache node pushes the bytes (a subscription: no request per delivery, a byte window for flow control)
    /// and says every `heartbeat` that it is alive (`deliver` then gets an empty batch); a store, which has no
    /// subscriptions, is polled with tail reads instead. When the connection breaks or the node goes silent, the
    /// client fails over as requests do and subscribes again right after the last delivered event: no gap, no
    /// duplicate. It gives up with the last error after the request timeout without progress.
    public func follow(
        _ cursor: SegmentCursor, heartbeat: Duration = .seconds(5),
        _ deliver: (SegmentInfo, [PointedEvent]) async throws -> Bool
    ) async throws -> SegmentCursor {
        var cursor = cursor
        var failingSince: ContinuousClock.Instant?
        var lastError = EddyError(.timedOut, "no server answered in time")
        var pause = Duration.milliseconds(20)
        while true {
            try Task.checkCancellation()
            if let since = failingSince, ContinuousClock.now - since > configuration.requestTimeout { throw lastError }
            let client: StoreClient
            do {
                client = try await connection()
            } catch {
                lastError = error
                failingSince = failingSince ?? .now
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(500))
                continue
            }
            let subscription = client.subscribe(cursor.segment, from: cursor.offset, heartbeat: heartbeat)
            defer { subscription.cancel() }
            do {
                for try await chunk in subscription {
                    guard chunk.offset == cursor.offset else {
                        throw EddyError(
                            .malformedFrame, "bytes pushed at offset \(chunk.offset) where \(cursor.offset) was next")
                    }
                    let events = try cursor.take(chunk.data)
                    failingSince = nil
                    pause = .milliseconds(20)
                    guard try await deliver(chunk.info, events) else { return cursor }
                    if chunk.info.sealed && cursor.offset >= chunk.info.length { return cursor }
                }
                // The node ended the subscription without reaching a sealed end: subscribe again.
            } catch let error as EddyError where error.code == .unknownMessageType {
                return try await poll(cursor, wait: heartbeat, deliver)
            } catch let error as EddyError where error.isRetriable {
                cursor.rewind()
                lastError = error
                failingSince = failingSince ?? .now
                if error.code == .connectionFailed || error.code == .timedOut || !client.isActive {
                    rotate(after: client)
                } else {
                    try await Task.sleep(for: pause)
                    pause = min(pause * 2, .milliseconds(500))
                }
            }
        }
    }

    /// ``follow(_:heartbeat:_:)`` by tail reads, for servers without subscriptions.
    private func poll(
        _ cursor: SegmentCursor, wait: Duration, _ deliver: (SegmentInfo, [PointedEvent]) async throws -> Bool
    ) async throws -> SegmentCursor {
        var cursor = cursor
        while true {
            try Task.checkCancellation()
            let (info, events) = try await cursor.step(self, wait: wait)
            guard try await deliver(info, events) else { return cursor }
            if info.sealed && cursor.offset >= info.length { return cursor }
        }
    }

    /// A tail read may take its wait on top of the request timeout.
    public func readTimeout(wait: Duration) -> Duration? { configuration.requestTimeout + wait }

    /// Starts an append now, in call order: consecutive calls from one task reach the server in that order, as a
    /// writer's batches of one segment must (the store takes a writer's event numbers in order). When the first
    /// attempt fails on the path, the task waits for `after` (the writer's previous batch of the segment) and
    /// then sends again with failover, so retries keep the order too.
    public func appendInOrder(
        _ segment: SegmentID, frames: ByteBuffer, writerID: String, firstEventNumber: Int64,
        after previous: Task<AppendAck, any Error>? = nil
    ) -> Task<AppendAck, any Error> {
        let request = Request.append(
            segment: segment, writerID: writerID, firstEventNumber: firstEventNumber, frames: frames)
        let first = state.withLock { s in s.current?.isActive == true ? s.current : nil }.map {
            ($0, $0.submit(request, timeout: configuration.requestTimeout))
        }
        return Task {
            if let (client, answer) = first {
                do {
                    let r = try await StoreClient.answer(answer)
                    guard case .appendAck(let ack) = r else {
                        throw EddyError(.malformedFrame, "the server answered an append with \(r)")
                    }
                    return ack
                } catch let error as EddyError where error.isRetriable {
                    // A connection that broke (or went silent) sends the retry to the next server, not back to it.
                    if error.code == .connectionFailed || !client.isActive { rotate(after: client) }
                    _ = await previous?.result
                }
            }
            return try await append(segment, frames: frames, writerID: writerID, firstEventNumber: firstEventNumber)
        }
    }
}
