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
/// the next (an append only when its writer ID makes the retry harmless).
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
    package init(
        addresses: [ServerAddress], zone: String? = nil, group: EventLoopGroup, connectTimeout: Duration,
        token: String = "", tls: ClientTLS? = nil
    ) {
        precondition(!addresses.isEmpty, "an upstream needs an address")
        self.addresses = addresses
        self.zone = zone
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

    /// Whether a request may be sent again after its connection broke: all but an append without a writer ID
    /// (which the server cannot recognise as a retry).
    static func retriable(_ request: Request) -> Bool {
        if case .append(_, let writerID, _, _) = request { return !writerID.isEmpty }
        return true
    }

    private func connection(within timeout: Duration) async throws(EddyError) -> StoreClient {
        if let c = current.withLock({ $0 }), c.isActive { return c }
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

    /// Closes the connection.
    package func close() async {
        let c = current.withLock { c in
            defer { c = nil }
            return c
        }
        await c?.close()
    }
}
