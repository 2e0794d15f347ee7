import ArgumentParser
import CNUMA
import CZstd
import Foundation
import Logging
import SegmentStore
import StoreServer
import StreamModel
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Options of a store process, shared by `eddy store` and `eddy up`.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "Journal I/O path: auto (io_uring, else pwrite+fdatasync), io_uring or posix.")
    var io: String = "auto"

    @Option(name: .long, help: "Journal bytes between checkpoints.")
    var checkpointBytes: UInt64 = 64 << 20

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func backend() throws -> IOBackend {
        guard let b = IOBackend(rawValue: io) else {
            throw ValidationError("unknown --io '\(io)': use auto, io_uring or posix")
        }
        return b
    }
}

/// Runs a store and its server until SIGINT or SIGTERM, then shuts down cleanly (checkpoint included).
func serveStore(data: String, listen: String, options: StoreOptions) async throws {
    bootstrapLogging(level: options.logLevel)
    let logger = Logger(label: "eddy")
    let address = try ServerAddress(parsing: listen)
    var configuration = StoreConfiguration(dataDirectory: data, logger: Logger(label: "eddy.store"))
    configuration.ioBackend = try options.backend()
    configuration.checkpointBytes = options.checkpointBytes
    let store = try SegmentStore(configuration: configuration)
    logger.info(
        "platform",
        metadata: [
            "journal-io": "\(store.ioPath)",
            "numa-nodes": "\(numa_available() == 0 ? Int(numa_max_node()) + 1 : 1)",
            "zstd": "\(String(cString: ZSTD_versionString()))",
        ])
    let server: StoreServer
    do {
        server = try await StoreServer.start(store: store, configuration: StoreServerConfiguration(address: address))
    } catch {
        store.close()
        throw error
    }
    logger.info("eddy store ready", metadata: ["listen": "\(server.address)", "data": "\(data)"])
    let signal = await waitForSignal()
    logger.info("shutting down", metadata: ["signal": "\(signal)"])
    await server.close()
    store.close()
    logger.info("stopped")
}

/// Waits for SIGINT or SIGTERM and returns its number.
func waitForSignal() async -> Int32 {
    let (stream, continuation) = AsyncStream<Int32>.makeStream()
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { continuation.yield(sig) }
        source.resume()
        sources.append(source)
    }
    var iterator = stream.makeAsyncIterator()
    let received = await iterator.next() ?? SIGTERM
    for s in sources { s.cancel() }
    return received
}

struct Store: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the segment store server.",
        discussion: "Serves the store protocol (docs/protocol.md) until Ctrl-C or SIGTERM.")

    @Option(name: .long, help: "The data directory.")
    var data: String

    @Option(name: .long, help: "HOST:PORT to listen on.")
    var listen: String = "127.0.0.1:9090"

    @OptionGroup var options: StoreOptions

    func run() async throws {
        try await reportingErrors { try await serveStore(data: data, listen: listen, options: options) }
    }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the embedded default on this machine (for now: a store on 127.0.0.1:9090, data in ./data).")

    @Option(name: .long, help: "The data directory.")
    var data: String = "./data"

    @Option(name: .long, help: "HOST:PORT for the store.")
    var listen: String = "127.0.0.1:9090"

    @OptionGroup var options: StoreOptions

    func run() async throws {
        try await reportingErrors { try await serveStore(data: data + "/store", listen: listen, options: options) }
    }
}
