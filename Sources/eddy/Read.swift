import ArgumentParser
import EddyClient
import Foundation
import NIOCore
import StreamModel

/// Options shared by `read` and `tail`.
struct ReadOptions: ParsableArguments {
    @Argument(help: "SCOPE/STREAM") var stream: String
    @Option(
        name: .long,
        help: "Start after this event pointer (repeat for several segments); only the named segments are read.")
    var from: [String] = []
    @Option(name: .long, help: "Output format: text (payloads) or json.") var format: String = "text"
    @OptionGroup var server: ServerOption

    func eventFormat() throws -> EventFormat {
        guard let f = EventFormat(rawValue: format) else {
            throw ValidationError("unknown --format '\(format)': use text or json")
        }
        return f
    }

    /// One cursor per segment to read: from its start, or just after each --from pointer.
    func cursors(_ client: EddyClient) async throws -> [SegmentCursor] {
        try await readCursors(client, stream: stream, from: from)
    }
}

/// One cursor per segment of `stream`: from its start, or just after each pointer of `from` (then only the
/// segments those name; ``EddyClient/cursors(_:at:)``).
func readCursors(_ client: EddyClient, stream: String, from: [String]) async throws -> [SegmentCursor] {
    try await client.cursors(try await client.info(try parseStream(stream)), at: from)
}

/// Prints the events of `cursors` until each segment's current end (or, with `follow`, until all are sealed).
func printEvents(_ client: EddyClient, _ cursors: [SegmentCursor], follow: Bool, poll: Duration, format: EventFormat)
    async throws
{
    let output = Output.shared
    for try await e in client.events(cursors, follow: follow, poll: poll) {
        output.line(bytes: format.render(e.event, pointer: e.pointer))
        if follow { output.flush() }
    }
    output.flush()
}

struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every event from the start (or after a pointer) up to the current tail, then exit.")
    @OptionGroup var options: ReadOptions

    func run() async throws {
        ClientMemory.reuseAnswerBuffers()
        let format = try options.eventFormat()
        try await withClient(options.server) { client in
            // Segment by segment, so the output of one segment is never interleaved with another's.
            for cursor in try await options.cursors(client) {
                try await printEvents(client, [cursor], follow: false, poll: .zero, format: format)
            }
        }
    }
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Like read, then follow new events until interrupted (or until every segment is sealed).")
    @OptionGroup var options: ReadOptions
    @Option(
        name: .long,
        help:
            "Heartbeat of the subscription to a node (a node silent for two and a second is left for the next), or the wait of one tail read against a store, in seconds."
    ) var poll: Int = 5

    func run() async throws {
        ClientMemory.reuseAnswerBuffers()
        guard (1...60).contains(poll) else { throw ValidationError("--poll must be 1 to 60 seconds, not \(poll)") }
        let format = try options.eventFormat()
        try await withClient(options.server) { client in
            try await printEvents(
                client, try await options.cursors(client), follow: true, poll: .seconds(poll), format: format)
        }
    }
}
