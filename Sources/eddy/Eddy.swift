import ArgumentParser
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
            Sim.self, CrashWriter.self, CrashQueue.self,
        ]
    )
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

/// Sets up logging to stderr once, at `level`.
func bootstrapLogging(level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

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
