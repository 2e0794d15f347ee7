import EddyClient
import StreamModel
import Synchronization

/// NodeClients are the gateway's connections to its own node's protocol port: one client per bearer token (one
/// in all with authentication off), shared by every HTTP request that presents it, so the node authenticates and
/// authorizes gateway requests exactly as it does binary ones, and many HTTP readers share one connection.
///
/// A client idle (no request using it) for ``idleLimit``, or the least recently used idle one once more than
/// ``capacity`` are open, is closed.
final class NodeClients: Sendable {
    /// The most clients kept open while idle.
    static let capacity = 256
    /// How long an idle client is kept.
    static let idleLimit: Duration = .seconds(300)

    private struct Entry {
        var client: Task<EddyClient, any Error>
        var users: Int
        var lastUsed: ContinuousClock.Instant
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var closed = false
        /// When idle clients were last looked for: at most every few seconds, not on every request.
        var swept = ContinuousClock.now
    }
    private let state = Mutex(State())
    private let base: EddyClient.Configuration

    /// Clients made from `base` (the node's address, TLS), each with its own token.
    init(base: EddyClient.Configuration) { self.base = base }

    /// A lease on the client of `token`, connected if it was not: hold it while the client is in use.
    /// - Throws: the connection's error (``EddyError/Code/unauthorized`` for a token the node refuses,
    ///   ``EddyError/Code/connectionFailed`` when the node cannot be reached).
    func lease(_ token: String) async throws(EddyError) -> Lease {
        let task = try state.withLock { (s) throws(EddyError) -> Task<EddyClient, any Error> in
            guard !s.closed else { throw EddyError(.shuttingDown, "the gateway is shutting down") }
            if var e = s.entries[token] {
                e.users += 1
                e.lastUsed = .now
                s.entries[token] = e
                return e.client
            }
            var configuration = base
            configuration.token = token
            let t = Task { try await EddyClient.connect(configuration) }
            s.entries[token] = Entry(client: t, users: 1, lastUsed: .now)
            return t
        }
        do {
            return Lease(client: try await task.value, token: token, pool: self)
        } catch {
            // A failed connection is forgotten: the next request connects again.
            state.withLock { s in
                if var e = s.entries[token] {
                    e.users -= 1
                    if e.users == 0 { s.entries[token] = nil } else { s.entries[token] = e }
                }
            }
            throw (error as? EddyError) ?? EddyError(.connectionFailed, "cannot reach the node: \(error)")
        }
    }

    fileprivate func release(_ token: String) {
        let stale = state.withLock { s -> [Task<EddyClient, any Error>] in
            if var e = s.entries[token] {
                e.users -= 1
                e.lastUsed = .now
                s.entries[token] = e
            }
            let now = ContinuousClock.now
            guard s.entries.count > Self.capacity || now - s.swept > .seconds(10) else { return [] }
            s.swept = now
            var idle = s.entries.filter { $0.value.users == 0 }.sorted { $0.value.lastUsed < $1.value.lastUsed }
            var dropped: [Task<EddyClient, any Error>] = []
            while let oldest = idle.first,
                s.entries.count > Self.capacity || now - oldest.value.lastUsed > Self.idleLimit
            {
                idle.removeFirst()
                s.entries[oldest.key] = nil
                dropped.append(oldest.value.client)
            }
            return dropped
        }
        if !stale.isEmpty { Task { for t in stale { await (try? t.value)?.close() } } }
    }

    /// How many clients are open (or connecting).
    var count: Int { state.withLock { $0.entries.count } }

    /// Closes every client; leases taken from now on fail.
    func close() async {
        let all = state.withLock { s in
            s.closed = true
            defer { s.entries = [:] }
            return s.entries.values.map(\.client)
        }
        for t in all { await (try? t.value)?.close() }
    }
}

/// Lease is a client in use by one HTTP request; the lease ends when it is released or dropped (a streamed
/// response's body holds it until it ends).
final class Lease: Sendable {
    let client: EddyClient
    private let token: String
    private let pool: NodeClients

    fileprivate init(client: EddyClient, token: String, pool: NodeClients) {
        self.client = client
        self.token = token
        self.pool = pool
    }

    deinit { pool.release(token) }
}
