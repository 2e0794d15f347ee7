import Coalescing
import EddyTLS
import NIOCore
import StreamModel
import Synchronization
import WireProtocol

/// Upstream is a connection to one server (the store, or a peer node) that reconnects by itself: a request
/// finds the current connection or makes one (one attempt at a time, shared by all callers), and a connection
/// that failed is dropped so the next request connects again. Every request has a deadline, so a dead or
/// unreachable server gives a typed error in time, never a hang.
///
/// Given several addresses (a regional ring's `--upstream-ring`: the nodes of the home ring, which answer the
/// store's requests), it keeps one connection, to a node of `zone` when one answers (else the first that does),
/// and fails over to the others when it breaks: a request that found its connection broken is sent once more on
/// the next (an append only when its writer ID makes the retry harmless). While it is on a node of another zone,
/// it tries the others every `zoneProbeInterval` and moves back to one of `zone` as soon as one answers; the
/// connection it leaves is closed `retireGrace` later, once what was in flight on it has ended.
package final class Upstream: Sendable {
    /// The addresses, in the order they are tried.
    package let addresses: [ServerAddress]
    /// The zone preferred among them (nil: the first that answers).
    package let zone: String?
    private let group: EventLoopGroup
    private let connectTimeout: Duration
    /// The node's service token, sent in every hello (empty: none).
    private let token: String
    /// TLS to the server (the node's certificate, trusting `--tls-ca`); nil: plain TCP.
    private let tls: ClientTLS?
    private let connecting = SingleFlight<Int, StoreClient>()
    private let current = Mutex<StoreClient?>(nil)
    /// The address tried first (the one that last answered).
    private let preferred = Atomic<Int>(0)
    private let lastConnectRefused = Atomic<Bool>(false)
    /// How many times a broken connection was replaced by one to another address.
    package let failovers = Atomic<Int>(0)
    /// How many times the upstream moved back to a node of `zone` after failing over elsewhere.
    package let zoneReturns = Atomic<Int>(0)
    private let zoneProbeInterval: Duration
    private let retireGrace: Duration
    /// When the zone was last probed for, while on a node of another zone (nil: not yet).
    private let lastProbe = Mutex<ContinuousClock.Instant?>(nil)
    private let probing = Atomic<Bool>(false)
    /// Set by ``close()``: no connection is made after it.
    private let closed = Atomic<Bool>(false)
    /// The zone each address said in its hello, by index (a probe for `zone` skips those of another).
    private let zones = Mutex<[Int: String]>([:])
    /// Connections left for one in `zone`, open until their grace ends (or ``close()``).
    private let retiring = Mutex<[StoreClient]>([])

    /// Whether the last connection attempt was refused outright (nothing listens: the process is gone), as
    /// opposed to timing out (a slow or partitioned host).
    package var refused: Bool { lastConnectRefused.load(ordering: .relaxed) }

    /// The address in use (or to be tried first).
    package var address: ServerAddress {
        current.withLock { $0?.address } ?? addresses[preferred.load(ordering: .relaxed) % addresses.count]
    }

    package convenience init(
        address: ServerAddress, group: EventLoopGroup, connectTimeout: Duration, token: String = "",
        tls: ClientTLS? = nil
    ) {
        self.init(addresses: [address], group: group, connectTimeout: connectTimeout, token: token, tls: tls)
    }

    /// An upstream of several servers that answer the same requests (a home ring's nodes).
    /// - Parameters:
    ///   - zoneProbeInterval: how often, while connected outside `zone`, the other addresses are tried for a
    ///     node of `zone`.
    ///   - retireGrace: how long a connection left for one in `zone` stays open for what is in flight on it.
    package init(
        addresses: [ServerAddress], zone: String? = nil, group: EventLoopGroup, connectTimeout: Duration,
        token: String = "", tls: ClientTLS? = nil, zoneProbeInterval: Duration = .seconds(5),
        retireGrace: Duration = .seconds(30)
    ) {
        precondition(!addresses.isEmpty, "an upstream needs an address")
        self.addresses = addresses
        self.zone = zone
        self.zoneProbeInterval = zoneProbeInterval
        self.retireGrace = retireGrace
        self.group = group
        self.connectTimeout = connectTimeout
        self.token = token
        self.tls = tls
    }

    /// Sends `request` and waits at most `timeout` for its answer.
    /// - Throws: the server's error answer; ``EddyError/Code/unavailable`` when the server cannot be reached;
    ///   ``EddyError/Code/timedOut`` past the deadline.
    /// `submitted` runs once the request has been written to the connection (``StoreClient/send(_:timeout:submitted:)``).
    package func send(
        _ request: Request, timeout: Duration, submitted: (@Sendable () -> Void)? = nil
    ) async throws(EddyError) -> Response {
        var attempts = addresses.count > 1 && Self.retriable(request) ? 2 : 1
        while true {
            attempts -= 1
            // Connecting counts against the request's deadline too.
            let client = try await connection(within: min(timeout, connectTimeout))
            do {
                return try await client.send(request, timeout: timeout, submitted: submitted)
            } catch  where error.code == .connectionFailed {
                drop(client)
                guard attempts > 0 else {
                    throw EddyError(.unavailable, "\(client.address) is unreachable: \(error.message)")
                }
            }
        }
    }

    /// Follows `segment` from `offset` by subscription on the connection in use (a home ring's node pushes its
    /// bytes as they arrive: see ``StoreClient/subscribe(_:from:window:heartbeat:)``).
    /// - Returns: the subscription and the connection it runs on, to give to ``abandon(_:)`` when the
    ///   subscription failed for want of the server, and to ``isCurrent(_:)`` to learn that the upstream moved.
    /// - Throws: ``EddyError/Code/unavailable`` when no server can be reached; ``EddyError/Code/shuttingDown``
    ///   after ``close()``.
    package func subscribe(
        _ segment: SegmentID, from offset: UInt64, window: Int, heartbeat: Duration, timeout: Duration
    ) async throws(EddyError) -> (subscription: Subscription, client: StoreClient) {
        let client = try await connection(within: min(timeout, connectTimeout))
        return (client.subscribe(segment, from: offset, window: window, heartbeat: heartbeat), client)
    }

    /// Drops `client` (when it is still the connection in use): a subscription on it broke or went silent, so
    /// the next request connects again, failing over when its server is gone.
    package func abandon(_ client: StoreClient) { drop(client) }

    /// Whether `client` is still the connection in use (false once the upstream failed over or moved back).
    /// Asked of a connection outside `zone`, it also starts the periodic probe for one in `zone` (a node that
    /// only follows subscriptions sends no request that would).
    package func isCurrent(_ client: StoreClient) -> Bool {
        guard current.withLock({ $0 === client }) else { return false }
        if let zone, client.zone != zone { probeZone(zone, leaving: client) }
        return true
    }

    /// Whether a request may be sent again after its connection broke: all but an append without a writer ID
    /// (which the server cannot recognise as a retry).
    static func retriable(_ request: Request) -> Bool {
        if case .append(_, let writerID, _, _) = request { return !writerID.isEmpty }
        return true
    }

    private func connection(within timeout: Duration) async throws(EddyError) -> StoreClient {
        guard !closed.load(ordering: .relaxed) else {
            throw EddyError(
                .shuttingDown, "the connection to \(address) was closed (shutting down, or it left the ring)")
        }
        if let c = current.withLock({ $0 }), c.isActive {
            if let zone, c.zone != zone { probeZone(zone, leaving: c) }
            return c
        }
        do {
            let (c, _) = try await connecting.run(0) { try await self.connect(within: timeout) }
            current.withLock { $0 = c }
            lastConnectRefused.store(false, ordering: .relaxed)
            return c
        } catch let error as EddyError where error.code == .unauthorized {
            // The server is up but refuses this node's service token: a set-up error, said as it is.
            throw error
        } catch let error as EddyError {
            lastConnectRefused.store(error.message.lowercased().contains("refused"), ordering: .relaxed)
            throw error
        } catch {
            throw EddyError(.unavailable, "\(address) is unreachable: \(error)")
        }
    }

    /// Connects to the first address that answers, from the preferred one on; with a zone, to one of that zone
    /// if any answers (the first other one that answered otherwise).
    private func connect(within timeout: Duration) async throws(EddyError) -> StoreClient {
        let start = preferred.load(ordering: .relaxed)
        var fallback: (StoreClient, Int)?
        var failures: [(address: ServerAddress, message: String)] = []
        for step in 0..<addresses.count {
            let index = (start + step) % addresses.count
            let address = addresses[index]
            do {
                let c = try await StoreClient.connect(
                    to: address, group: group, timeout: timeout, token: token, tls: tls)
                zones.withLock { $0[index] = c.zone }
                if zone == nil || c.zone == zone {
                    if let (other, _) = fallback { await other.close() }
                    settle(on: index, from: start)
                    return c
                }
                if fallback == nil { fallback = (c, index) } else { await c.close() }
            } catch  where error.code == .unauthorized {
                throw EddyError(.unauthorized, "\(address) refused this node's service token: \(error.message)")
            } catch {
                failures.append((address, error.message))
            }
        }
        if let (c, index) = fallback {
            settle(on: index, from: start)
            return c
        }
        if addresses.count == 1 {
            throw EddyError(.unavailable, "\(addresses[0]) is unreachable: \(failures.first?.message ?? "")")
        }
        let each = failures.map { "\($0.address): \($0.message)" }.joined(separator: "; ")
        throw EddyError(.unavailable, "no upstream node answered (\(each))")
    }

    /// On a node outside `zone`: at most every `zoneProbeInterval`, one probe (in the background, not delaying
    /// the request that noticed) tries the other addresses for a node of `zone`; the first that answers becomes
    /// the connection in use, and `old` is closed after `retireGrace`.
    private func probeZone(_ zone: String, leaving old: StoreClient) {
        let now = ContinuousClock.now
        let due = lastProbe.withLock { last -> Bool in
            if let l = last, now - l < zoneProbeInterval { return false }
            last = now
            return true
        }
        guard due, probing.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else {
            return
        }
        Task {
            defer { probing.store(false, ordering: .relaxed) }
            let known = zones.withLock { $0 }
            for (index, address) in addresses.enumerated() where address != old.address {
                if let z = known[index], z != zone { continue }
                guard
                    let c = try? await StoreClient.connect(
                        to: address, group: group, timeout: connectTimeout, token: token, tls: tls)
                else { continue }
                zones.withLock { $0[index] = c.zone }
                guard c.zone == zone else {
                    await c.close()
                    continue
                }
                let swapped = current.withLock { cur -> Bool in
                    guard cur === old else { return false }
                    cur = c
                    return true
                }
                guard swapped else {
                    // The connection changed meanwhile (it broke and another was made): that one stands.
                    await c.close()
                    return
                }
                preferred.store(index, ordering: .relaxed)
                zoneReturns.add(1, ordering: .relaxed)
                retiring.withLock { $0.append(old) }
                try? await Task.sleep(for: retireGrace)
                let still = retiring.withLock { r -> Bool in
                    guard let i = r.firstIndex(where: { $0 === old }) else { return false }
                    r.remove(at: i)
                    return true
                }
                if still { await old.close() }
                return
            }
        }
    }

    private func settle(on index: Int, from start: Int) {
        if index != start { failovers.add(1, ordering: .relaxed) }
        preferred.store(index, ordering: .relaxed)
    }

    private func drop(_ client: StoreClient) {
        let gone = current.withLock { c -> StoreClient? in
            guard c === client else { return nil }
            c = nil
            return client
        }
        if let gone { Task { await gone.close() } }
    }

    /// Closes the connection (and any it left for one in its zone); requests after it fail with
    /// ``EddyError/Code/shuttingDown``.
    package func close() async {
        closed.store(true, ordering: .relaxed)
        let c = current.withLock { c in
            defer { c = nil }
            return c
        }
        await c?.close()
        let left = retiring.withLock { r in
            defer { r = [] }
            return r
        }
        for old in left { await old.close() }
    }
}
