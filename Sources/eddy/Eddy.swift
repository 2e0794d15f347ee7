import ArgumentParser
import EddyConfig
import Foundation
import Logging
import ObjectStorage
import StreamModel
import WireProtocol

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
            Sim.self, Config.self, CrashWriter.self, CrashQueue.self,
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

    func validate() throws {
        _ = try LogLevels(parsing: logLevels)
        guard (0...3600).contains(shutdownGrace) else {
            throw ValidationError("--shutdown-grace must be from 0 to 3600 seconds")
        }
    }

    /// Waits for SIGINT or SIGTERM, then runs `close` on the shutdown's clock: past the grace period the process
    /// logs it and exits with status 1 (a close that hangs on a dead peer must not keep a stopping server alive).
    func serveUntilSignal(logger: Logger, close: () async -> Void) async {
        let signal = await waitForSignal()
        logger.info("shutting down", metadata: ["signal": "\(signal)"])
        let grace = shutdownGrace
        let timer = Task.detached {
            do { try await Task.sleep(for: .milliseconds(Int64(grace * 1000))) } catch { return }
            logger.error("shutdown took longer than its grace period; exiting", metadata: ["grace-seconds": "\(grace)"])
            Foundation.exit(1)
        }
        await close()
        timer.cancel()
        logger.info("stopped")
    }

    /// Sets up logging for the process.
    func bootstrapLogging() throws {
        EddyLogHandler.bootstrap(level: logLevel, levels: try LogLevels(parsing: logLevels), format: logFormat)
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

    /// `--servers` when given, else `--server`.
    func addresses() throws -> [ServerAddress] {
        guard let servers else { return [try ServerAddress(parsing: server)] }
        return try servers.split(separator: ",").map { try ServerAddress(parsing: String($0)) }
    }
}
