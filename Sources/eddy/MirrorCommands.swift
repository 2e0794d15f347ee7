import ArgumentParser
import AsyncHTTPClient
import EddyAdmin
import EddyClient
import EddyConfig
import EddyTLS
import Foundation
import Logging
import Mirror
import NIOCore
import StreamModel
import WireProtocol

/// `eddy mirror`: copies streams to another cluster with identical event pointers (docs/regions.md).
struct MirrorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror",
        abstract: "Copy streams to another cluster continuously, every event at the same pointer.",
        subcommands: [MirrorRun.self, MirrorStatusCommand.self],
        defaultSubcommand: MirrorRun.self)
}

/// `eddy mirror --from ... --to ... --streams PATTERN`.
struct MirrorRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Mirror the streams PATTERN names from one cluster to another until Ctrl-C or SIGTERM.",
        discussion: """
            Creates each missing target stream with the source's segment count and appends every event to the \
            same segment at the same offset, exactly once (a mirror killed and started again resumes from the \
            target's length). Follows seals, truncations and deletions. A target segment something else wrote to \
            is refused and left alone; the others go on. `eddy mirror status` shows the lag.
            """)

    @Option(name: .long, help: "The source cluster's nodes (or store), HOST:PORT,HOST:PORT,...")
    var from: String

    @Option(name: .long, help: "The target cluster's nodes (or store), HOST:PORT,HOST:PORT,...")
    var to: String

    @Option(name: .long, help: "Which streams: a scope/stream pattern, * matching any run of characters (scope/*, *).")
    var streams: String

    @Option(
        name: .long,
        help: "A stream of the target cluster that records which source stream each target stream copies.")
    var checkpoint: String?

    @Option(name: .long, help: "The mirror's admin HTTP address (/health, /status, /metrics): HOST:PORT or none.")
    var adminListen: String = "127.0.0.1:9499"

    @Option(name: .long, help: "Seconds between listings of the source's streams (new ones, deletions, lag).")
    var scanInterval: Double = 1

    @Option(name: .long, help: "Bearer token for the source (else $EDDY_FROM_TOKEN).") var fromToken: String?
    @Option(name: .long, help: "TLS to the source, trusting this PEM authority.") var fromTlsCa: String?
    @Option(name: .long, help: "Client certificate (PEM) for the source.") var fromTlsCert: String?
    @Option(name: .long, help: "Private key (PEM) of --from-tls-cert.") var fromTlsKey: String?
    @Option(name: .long, help: "The mirror's zone in the source cluster: its nodes come first.") var fromZone: String?
    @Option(name: .long, help: "Bearer token for the target (else $EDDY_TO_TOKEN).") var toToken: String?
    @Option(name: .long, help: "TLS to the target, trusting this PEM authority.") var toTlsCa: String?
    @Option(name: .long, help: "Client certificate (PEM) for the target.") var toTlsCert: String?
    @Option(name: .long, help: "Private key (PEM) of --to-tls-cert.") var toTlsKey: String?
    @Option(name: .long, help: "The mirror's zone in the target cluster: its nodes come first.") var toZone: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log lines as text or json.")
    var logFormat: EddyLogHandler.Format = .text

    func validate() throws {
        guard scanInterval > 0 && scanInterval <= 3600 else {
            throw ValidationError("--scan-interval must be from 0 to 3600 seconds")
        }
        if let checkpoint {
            do { _ = try StreamName(parsing: checkpoint) } catch {
                throw ValidationError("--checkpoint: \(error.message)")
            }
        }
        if adminListen != "none" {
            do { _ = try ServerAddress(parsing: adminListen) } catch {
                throw ValidationError("--admin-listen: \(error.message)")
            }
        }
    }

    /// One side's client settings.
    static func side(
        _ what: String, servers: String, token: String?, environment: String, ca: String?, cert: String?,
        key: String?, zone: String?
    ) throws -> EddyClient.Configuration {
        let addresses: [ServerAddress]
        do {
            addresses = try ServerAddress.list(parsing: servers)
        } catch {
            throw ValidationError("--\(what): \(error.message)")
        }
        guard !addresses.isEmpty else { throw ValidationError("--\(what) names no server") }
        var c = EddyClient.Configuration(servers: addresses)
        c.token = token ?? ProcessInfo.processInfo.environment[environment] ?? ""
        c.zone = zone ?? ""
        if ca != nil || cert != nil {
            do {
                c.tls = try ClientTLS(authority: ca, certificate: cert, key: key)
            } catch {
                throw ValidationError("--\(what)-tls-*: \(error)")
            }
        }
        return c
    }

    func run() async throws {
        EddyLogHandler.bootstrap(level: logLevel, levels: try LogLevels(parsing: ""), format: logFormat)
        let logger = Logger(label: "eddy.mirror")
        var configuration = MirrorConfiguration(
            source: try Self.side(
                "from", servers: from, token: fromToken, environment: "EDDY_FROM_TOKEN", ca: fromTlsCa,
                cert: fromTlsCert, key: fromTlsKey, zone: fromZone),
            target: try Self.side(
                "to", servers: to, token: toToken, environment: "EDDY_TO_TOKEN", ca: toTlsCa, cert: toTlsCert,
                key: toTlsKey, zone: toZone),
            pattern: streams)
        configuration.checkpoint = try checkpoint.map { try StreamName(parsing: $0) }
        configuration.scanInterval = .milliseconds(Int64(scanInterval * 1000))
        configuration.logger = logger
        try await reportingErrors {
            let mirror = try await Self.start(configuration, logger: logger)
            var admin: AdminServer?
            if adminListen != "none" {
                let metrics = MetricsExporter()
                do {
                    admin = try await AdminServer.start(
                        address: try ServerAddress(parsing: adminListen), logger: Logger(label: "eddy.admin"),
                        install: AdminRoutes.process(
                            role: "mirror", status: { Self.json(mirror.status()) }, samples: { mirror.metrics() },
                            metrics: metrics))
                } catch {
                    await mirror.close()
                    throw error
                }
            }
            let running = Task { await mirror.run() }
            logger.info(
                "eddy mirror running",
                metadata: [
                    "from": "\(from)", "to": "\(to)", "streams": "\(streams)",
                    "admin": "\(admin.map { "http://\($0.address)/" } ?? "none")",
                    "checkpoint": "\(checkpoint ?? "none")",
                ])
            let received = await waitForSignal()
            logger.info("stopping", metadata: ["signal": "\(received)"])
            running.cancel()
            await running.value
            await mirror.close()
            await admin?.close()
            logger.info("stopped")
        }
    }

    /// Starts the mirror; while a cluster cannot be reached (a link down, a cluster restarting) it tries again
    /// every 2 s, as a daemon should, until it can or the process is stopped. Other errors end the command.
    static func start(_ configuration: MirrorConfiguration, logger: Logger) async throws -> Mirror {
        // SIGTERM and SIGINT keep their default (the process ends) until the mirror runs: nothing to clean up yet.
        while true {
            do {
                return try await Mirror.start(configuration)
            } catch {
                // (Not `catch where`: Swift 6.3.1's SILGen crashes on it here, a typed throw in an untyped function.)
                guard error.code == .connectionFailed else { throw error }
                logger.warning("cannot start yet; trying again in 2 s", metadata: ["error": "\(error.message)"])
                try await Task.sleep(for: .seconds(2))
            }
        }
    }

    /// The status as JSON, keys sorted.
    static func json(_ status: MirrorStatus) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(status)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }
}

/// `eddy mirror status`: asks a running mirror's admin port.
struct MirrorStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running mirror's streams and their lag (its admin port's /status).")

    @Option(name: .long, help: "The mirror's admin HTTP address, HOST:PORT.")
    var admin: String = "127.0.0.1:9499"

    @OptionGroup var format: FormatOption

    func run() async throws {
        try await reportingErrors {
            let address = try ServerAddress(parsing: admin)
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            let body: ByteBuffer
            do {
                let response = try await client.execute(
                    HTTPClientRequest(url: "http://\(address)/status"), timeout: .seconds(10))
                body = try await response.body.collect(upTo: 64 << 20)
                try await client.shutdown()
                guard response.status == .ok else {
                    throw EddyError(.unavailable, "the mirror at \(address) answered \(response.status.code)")
                }
            } catch let error as EddyError {
                throw error
            } catch {
                try? await client.shutdown()
                throw EddyError(.connectionFailed, "no mirror answers at \(address): \(error)")
            }
            let status: MirrorStatus
            do {
                status = try JSONDecoder().decode(MirrorStatus.self, from: Data(body.readableBytesView))
            } catch {
                throw EddyError(.malformedFrame, "the answer of \(address) is not a mirror's status: \(error)")
            }
            if format.json {
                print(MirrorRun.json(status))
                return
            }
            print(
                "mirror \(status.from.joined(separator: ",")) -> \(status.to.joined(separator: ",")), streams \(status.pattern)"
            )
            if let error = status.error { print("error: \(error)") }
            print("copied: \(status.copiedEvents) events, \(status.copiedBytes) bytes")
            print(
                "STREAM".padding(toLength: 32, withPad: " ", startingAt: 0) + "  LAG_BYTES  LAG_SECONDS  SEGMENTS")
            for s in status.streams {
                let states = Dictionary(grouping: s.segments, by: \.state).map { "\($0.value.count) \($0.key)" }
                    .sorted()
                let name = s.stream.padding(toLength: 32, withPad: " ", startingAt: 0)
                let bytes = String(s.lagBytes).leftPadded(9)
                let seconds = String(format: "%11.1f", s.lagSeconds)
                let what = s.error ?? states.joined(separator: ", ")
                print("\(name)  \(bytes)  \(seconds)  \(what)")
                for g in s.segments where g.error != nil {
                    print("  segment \(g.number) \(g.state): \(g.error!)")
                }
            }
        }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
