import ArgumentParser
import EddyClient
import Foundation
import NIOCore
import StoreClient
import StreamModel
import WireProtocol

/// One plain connection to `--server` (the append benchmark measures a single path, without failover).
func connectStore(_ server: ServerOption) async throws -> StoreClient {
    try await StoreClient.connect(
        to: try ServerAddress(parsing: server.server), token: server.bearer, tls: try server.credentials.tls())
}

/// A client of the nearest of `--servers` (or of `--server`), with failover.
func connect(_ server: ServerOption) async throws -> EddyClient {
    var configuration = EddyClient.Configuration(servers: try server.addresses())
    configuration.zone = server.zone ?? ""
    configuration.token = server.bearer
    configuration.tls = try server.credentials.tls()
    return try await EddyClient.connect(configuration)
}

/// Connects, runs `body`, closes the connection (also when `body` throws), and reports errors as one line.
func withClient(_ server: ServerOption, _ body: (EddyClient) async throws -> Void) async throws {
    try await withOpened({ try await connect(server) }, close: { await $0.close() }, body)
}

/// Opens a connection with `open`, runs `body` with it, closes it (also when `body` throws), and reports errors
/// as one line, as every command does.
func withOpened<Connection>(
    _ open: () async throws -> Connection, close: (Connection) async -> Void,
    _ body: (Connection) async throws -> Void
) async throws {
    try await reportingErrors {
        let connection = try await open()
        do {
            try await body(connection)
        } catch {
            await close(connection)
            throw error
        }
        await close(connection)
    }
}

func parseStream(_ text: String) throws -> StreamName { try StreamName(parsing: text) }

func describe(_ info: SegmentInfo) -> String {
    "\(info.segment) start=\(info.startOffset) length=\(info.length) sealed=\(info.sealed)"
}

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a stream.")
    @Argument(help: "SCOPE/STREAM") var stream: String
    @Option(name: .long, help: "Number of segments (fixed at creation).") var segments: UInt32 = 1
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            try await client.createStream(try parseStream(stream), segments: segments)
            print("created \(stream) with \(segments) segment\(segments == 1 ? "" : "s")")
        }
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a stream and all its data.")
    @Argument(help: "SCOPE/STREAM") var stream: String
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            try await client.deleteStream(try parseStream(stream))
            print("deleted \(stream)")
        }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List streams.")
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            for s in try await client.listStreams() {
                let bytes = s.segments.reduce(UInt64(0)) { $0 + $1.length - $1.startOffset }
                print("\(s.name) segments=\(s.segments.count) bytes=\(bytes)")
            }
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a stream's segments: start, length, sealed.")
    @Argument(help: "SCOPE/STREAM") var stream: String
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            for s in try await client.info(try parseStream(stream)).segments { print(describe(s)) }
        }
    }
}

struct Seal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Seal every segment of a stream: no more appends.")
    @Argument(help: "SCOPE/STREAM") var stream: String
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            for s in try await client.info(try parseStream(stream)).segments {
                print(describe(try await client.seal(s.segment)))
            }
        }
    }
}

struct Truncate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop the bytes of a segment below an offset.",
        discussion: "Give --segment and --offset, or --before POINTER to drop everything before that event.")
    @Argument(help: "SCOPE/STREAM") var stream: String
    @Option(name: .long, help: "Segment number.") var segment: UInt32?
    @Option(name: .long, help: "New start offset: an event boundary.") var offset: UInt64?
    @Option(name: .long, help: "Truncate before this event pointer.") var before: String?
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await withClient(server) { client in
            let name = try parseStream(stream)
            let target: SegmentID
            let at: UInt64
            if let before {
                let pointer = try EventPointer(parsing: before)
                guard pointer.segment.stream == name else {
                    throw EddyError(.invalidArgument, "pointer \(before) is not in \(name)")
                }
                (target, at) = (pointer.segment, pointer.offset)
            } else if let segment, let offset {
                (target, at) = (SegmentID(stream: name, number: segment), offset)
            } else {
                throw EddyError(.invalidArgument, "give --segment and --offset, or --before POINTER")
            }
            print(describe(try await client.truncate(target, at: at)))
        }
    }
}
