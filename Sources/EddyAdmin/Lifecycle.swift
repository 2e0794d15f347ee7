import CacheNode
import Foundation
import Logging
import SegmentStore
import ServiceLifecycle
import StoreServer

/// ClosingService is a running server piece in a `ServiceGroup`: it was started before the group runs (so a
/// port in use fails the start, not the group), waits for the group's graceful shutdown, then closes the piece
/// in its own way (a node drains, the store checkpoints). The group shuts its services down one at a time in the
/// reverse of their order, so a process lists what must stop last first.
public struct ClosingService: Service, CustomStringConvertible {
    public let description: String
    /// Closes the piece (what the service does on shutdown; also for a start that fails half way).
    public let close: @Sendable () async -> Void

    /// A service named `description` that runs `close` on shutdown.
    public init(_ description: String, close: @escaping @Sendable () async -> Void) {
        self.description = description
        self.close = close
    }

    /// A node: on shutdown it drains (``CacheNode/drain(grace:)``) within `grace`.
    public static func node(_ node: CacheNode, grace: Duration) -> ClosingService {
        ClosingService("cache node \(node.core.configuration.name)") { await node.drain(grace: grace) }
    }

    /// The store and its server: on shutdown the listener closes, then the store takes its checkpoint and closes.
    public static func store(_ server: StoreServer) -> ClosingService {
        ClosingService("store \(server.address)") {
            await server.close()
            server.store.close()
        }
    }

    public func run() async throws {
        // Returns when the group shuts down gracefully, or throws when the task is cancelled: close either way.
        try? await gracefulShutdown()
        await close()
    }
}

/// GraceClock is the first service a group shuts down: it starts the shutdown's clock. A shutdown that has not
/// finished within `grace` logs so and exits the process with status 1 (a close that hangs on a dead peer must
/// not keep a stopping server alive).
public struct GraceClock: Service, CustomStringConvertible {
    public let description = "shutdown clock"
    private let grace: Duration
    private let logger: Logger

    /// A clock of `grace`.
    public init(grace: Duration, logger: Logger) {
        self.grace = grace
        self.logger = logger
    }

    public func run() async throws {
        do { try await gracefulShutdown() } catch { return }
        logger.info("shutting down", metadata: ["grace": "\(grace)"])
        let grace = self.grace
        let logger = self.logger
        Task.detached {
            try? await Task.sleep(for: grace)
            logger.error("shutdown took longer than its grace period; exiting", metadata: ["grace": "\(grace)"])
            exit(1)
        }
    }
}

/// Runs `services` in a `ServiceGroup` until SIGTERM or SIGINT, then shuts them down gracefully in the reverse of
/// their order, within `grace` (a ``GraceClock`` is added to go first).
public func runUntilSignal(_ services: [any Service], grace: Duration, logger: Logger) async throws {
    let all = services + [GraceClock(grace: grace, logger: logger)]
    let configuration = ServiceGroupConfiguration(
        services: all.map {
            ServiceGroupConfiguration.ServiceConfiguration(
                service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup)
        },
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    try await ServiceGroup(configuration: configuration).run()
}
