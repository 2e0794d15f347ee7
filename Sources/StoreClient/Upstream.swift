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
package final class Upstream: Sendable {
    package let address: ServerAddress
    private let group: EventLoopGroup
    private let connectTimeout: Duration
    /// The node's service token, sent in every hello (empty: none).
    private let token: String
    /// TLS to the server (the node's certificate, trusting `--tls-ca`); nil: plain TCP.
    private let tls: ClientTLS?
    private let connecting = SingleFlight<Int, StoreClient>()
    private let current = Mutex<StoreClient?>(nil)
    private let lastConnectRefused = Atomic<Bool>(false)

    /// Whether the last connection attempt was refused outright (nothing listens: the process is gone), as
    /// opposed to timing out (a slow or partitioned host).
    package var refused: Bool { lastConnectRefused.load(ordering: .relaxed) }

    package init(
        address: ServerAddress, group: EventLoopGroup, connectTimeout: Duration, token: String = "",
        tls: ClientTLS? = nil
    ) {
        self.address = address
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
        // Connecting counts against the request's deadline too.
        let client = try await connection(within: min(timeout, connectTimeout))
        do {
            return try await client.send(request, timeout: timeout, submitted: submitted)
        } catch  where error.code == .connectionFailed {
            drop(client)
            throw EddyError(.unavailable, "\(address) is unreachable: \(error.message)")
        }
    }

    private func connection(within timeout: Duration) async throws(EddyError) -> StoreClient {
        if let c = current.withLock({ $0 }), c.isActive { return c }
        let address = self.address
        let group = self.group
        let token = self.token
        let tls = self.tls
        do {
            let (c, _) = try await connecting.run(0) {
                try await StoreClient.connect(to: address, group: group, timeout: timeout, token: token, tls: tls)
            }
            current.withLock { $0 = c }
            lastConnectRefused.store(false, ordering: .relaxed)
            return c
        } catch let error as EddyError where error.code == .unauthorized {
            // The server is up but refuses this node's service token: a set-up error, said as it is.
            throw EddyError(.unauthorized, "\(address) refused this node's service token: \(error.message)")
        } catch let error as EddyError {
            lastConnectRefused.store(error.message.lowercased().contains("refused"), ordering: .relaxed)
            throw EddyError(.unavailable, "\(address) is unreachable: \(error.message)")
        } catch {
            throw EddyError(.unavailable, "\(address) is unreachable: \(error)")
        }
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
