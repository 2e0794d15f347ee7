import ArgumentParser
import EddyAdmin
import EddyAuth
import EddyConfig
import EddyTLS
import Foundation
import Hummingbird
import Logging
import ObjectStorage
import ServiceLifecycle
import StreamModel
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// The one executable: `eddy store`, `eddy up`, the kcat-like client commands and `eddy bench`.
@main
struct Eddy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eddy",
        abstract: "Eddy: a distributed cache tier for stream readers, with its bundled segment store.",
        discussion: """
            Start the embedded default with `eddy up` (a store and three cache nodes), then from another terminal:
              eddy create demo/events --segments 4
              printf 'hello\\nworld\\n' | eddy append demo/events
              eddy read demo/events
            Client commands talk to --server (default 127.0.0.1:9090, the first node) or the nearest of --servers.
            """,
        subcommands: [
            Up.self, Store.self, Create.self, Delete.self, List.self, Info.self, Append.self, Read.self, Tail.self,
            Seal.self, Truncate.self, Node.self, Admin.self, Export.self, Backup.self, Restore.self, Bench.self,
            Sim.self, Config.self, MirrorCommand.self, CrashWriter.self, CrashQueue.self,
        ]
    )

    /// Parses the command line with a server command's configuration in front of it (``ConfigFile/expand(_:environment:)``:
    /// the file, then `EDDY_...` variables, then the flags), then runs the command.
    static func main() async {
        let arguments: [String]
        do {
            arguments = try ConfigFile.expand(
                Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
        } catch {
            reportConfigurationErrors(error)
            Foundation.exit(1)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Runs a command body and turns an ``EddyError`` or an ``ObjectStoreError`` into one line on stderr and exit status 1.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as EddyError {
        FileHandle.standardError.write(Data("eddy: \(error.message)\n".utf8))
        throw ExitCode(1)
    } catch let error as ObjectStoreError {
        FileHandle.standardError.write(Data("eddy: object store: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension EddyLogHandler.Format: ExpressibleByArgument {}

/// What every server command (`eddy store`, `eddy node`, `eddy up`) takes beside its own settings: the
/// configuration file, logging, and the shutdown grace period.
struct ServerProcessOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "A YAML configuration file (docs/operations.md); EDDY_... variables and these flags override it.")
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log lines as text or json.")
    var logFormat: EddyLogHandler.Format = .text

    @Option(name: .long, help: "Levels per subsystem, LABEL=LEVEL,... (eddy.node=debug,eddy.s3=trace).")
    var logLevels: String = ""

    @Option(
        name: .long, help: "Seconds a clean shutdown may take after SIGTERM or SIGINT before the process exits with 1.")
    var shutdownGrace: Double = 30

    @Option(
        name: .long,
        help: "Admin HTTP address (health, metrics, dashboard): HOST:PORT, auto (the protocol port + 100) or none.")
    var adminListen: String = "auto"

    func validate() throws {
        _ = try LogLevels(parsing: logLevels)
        guard (0...3600).contains(shutdownGrace) else {
            throw ValidationError("--shutdown-grace must be from 0 to 3600 seconds")
        }
    }

    /// The whole shutdown's time limit.
    var grace: Duration { .milliseconds(Int64(shutdownGrace * 1000)) }

    /// How long one node's drain may take: half the grace, so the store's close has time too.
    var drainGrace: Duration { grace / 2 }

    /// Runs `services` until SIGTERM or SIGINT, then drains them in the reverse of their order on the shutdown's
    /// clock (``runUntilSignal(_:grace:logger:)``): past the grace period the process exits with status 1.
    func serve(_ services: [any Service], logger: Logger) async throws {
        try await runUntilSignal(services, grace: grace, logger: logger)
        logger.info("stopped")
    }

    /// The admin side of a server listening on `listen` (``AdminListen``); nil for `none`.
    func admin(beside listen: ServerAddress) throws -> AdminSetup? {
        do {
            return try AdminListen(parsing: adminListen).address(beside: listen).map { AdminSetup(address: $0) }
        } catch {
            throw ValidationError("--admin-listen: \(error.message)")
        }
    }

    /// Sets up logging for the process, and raises its open-file limit to the most the system allows (a server
    /// holds a descriptor per connection: `--max-connections` is 16,384 by default).
    func bootstrapLogging() throws {
        EddyLogHandler.bootstrap(level: logLevel, levels: try LogLevels(parsing: logLevels), format: logFormat)
        var limit = rlimit()
        if getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let before = limit.rlim_cur
            limit.rlim_cur = limit.rlim_max
            if setrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 {
                Logger(label: "eddy").debug("open files", metadata: ["from": "\(before)", "to": "\(limit.rlim_max)"])
            }
        }
    }
}

#if canImport(Glibc)
    /// `RLIMIT_NOFILE` as Glibc imports it (an enum value on Linux).
    let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#endif

/// A server's admin HTTP side: where it listens and the registry its metrics go to. Metrics are only recorded
/// for a server that has one (nothing records what no one can scrape).
struct AdminSetup {
    let address: ServerAddress
    let metrics = MetricsExporter()

    /// Starts the admin server with the routes `routes` makes for this setup's metrics, logging where it listens.
    func start(
        for what: String, access: AccessControl, tls: ServerTLS?,
        routes: (MetricsExporter) -> (Router<BasicRequestContext>) -> Void
    ) async throws -> AdminServer {
        let admin = try await AdminServer.start(
            address: address, logger: Logger(label: "eddy.admin"), access: access, tls: tls, install: routes(metrics))
        Logger(label: "eddy").info(
            "admin listening", metadata: ["admin": "\(Self.url(admin.address, tls: tls))", "server": "\(what)"])
        return admin
    }

    /// The admin server's URL: `https://` with TLS.
    static func url(_ address: ServerAddress, tls: ServerTLS?) -> String {
        "\(tls == nil ? "http" : "https")://\(address)/"
    }
}

/// The server options every client command shares.
struct ServerOption: ParsableArguments {
    @Option(name: .long, help: "A node's (or the store's) address, HOST:PORT.")
    var server: String = "127.0.0.1:9090"

    @Option(
        name: .long,
        help: "Seed nodes, HOST:PORT,HOST:PORT,...: the client uses the nearest (own zone first) and fails over.")
    var servers: String?

    @Option(name: .long, help: "The client's zone: nodes of the same zone are preferred.")
    var zone: String?

    @OptionGroup var credentials: ClientCredentials

    /// `--token`, else `$EDDY_TOKEN`, else none.
    var bearer: String { credentials.bearer }

    /// `--servers` when given, else `--server`.
    func addresses() throws -> [ServerAddress] {
        guard let servers else { return [try ServerAddress(parsing: server)] }
        return try ServerAddress.list(parsing: servers)
    }
}
