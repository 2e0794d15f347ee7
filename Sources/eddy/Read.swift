import ArgumentParser
import Foundation
import NIOCore
import StoreClient
import StreamModel

/// SegmentCursor follows one segment: it fetches bytes, cuts them into events and prints each one.
struct SegmentCursor {
    let segment: SegmentID
    /// The next byte to fetch.
    var offset: UInt64
    /// Fetched bytes that do not yet make a whole event; they start at `pendingOffset`.
    var pending: [UInt8] = []
    var pendingOffset: UInt64

    init(segment: SegmentID, offset: UInt64) {
        self.segment = segment
        self.offset = offset
        self.pendingOffset = offset
    }

    /// Fetches once (waiting up to `wait` at the tail) and prints the whole events that arrived.
    /// - Returns: the segment's state as the server saw it.
    mutating func step(_ client: StoreClient, wait: Duration, format: EventFormat) async throws -> SegmentInfo {
        let (info, data) = try await client.read(segment, from: offset, maxBytes: 1 << 20, wait: wait)
        offset += UInt64(data.readableBytes)
        pending.append(contentsOf: data.readableBytesView)
        var at = 0
        try pending.withBytes { (b) throws(EddyError) in
            while at < b.count {
                guard case .frame = EventFrame.check(b, at: at) else { break }
                let (event, size) = try EventFrame.decode(b, at: at)
                let pointer = EventPointer(segment: segment, offset: pendingOffset + UInt64(at), length: UInt32(size))
                Output.shared.line(bytes: format.render(event, pointer: pointer))
                at += size
            }
            if at < b.count, case .corrupt(let why) = EventFrame.check(b, at: at) {
                throw EddyError(.corruptData, "bad event in \(segment) at offset \(pendingOffset + UInt64(at)): \(why)")
            }
        }
        pending.removeFirst(at)
        pendingOffset += UInt64(at)
        Output.shared.flush()
        return info
    }
}

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
    func cursors(_ client: StoreClient) async throws -> [SegmentCursor] {
        let name = try parseStream(stream)
        let info = try await client.info(name)
        if from.isEmpty {
            return info.segments.map { SegmentCursor(segment: $0.segment, offset: $0.startOffset) }
        }
        var cursors: [SegmentCursor] = []
        for text in from {
            let pointer = try EventPointer(parsing: text)
            guard pointer.segment.stream == name, Int(pointer.segment.number) < info.segments.count else {
                throw EddyError(.invalidArgument, "pointer \(text) does not name a segment of \(name)")
            }
            var length = UInt64(pointer.length)
            if length == 0 {
                // A pointer without its size: read the frame's length field.
                let (_, head) = try await client.read(pointer.segment, from: pointer.offset, maxBytes: 4)
                guard let bodyLength = head.getInteger(at: head.readerIndex, as: UInt32.self) else {
                    throw EddyError(.invalidArgument, "no event at \(text)")
                }
                length = 4 + UInt64(bodyLength)
            }
            cursors.append(SegmentCursor(segment: pointer.segment, offset: pointer.offset + length))
        }
        return cursors
    }
}

struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every event from the start (or after a pointer) up to the current tail, then exit.")
    @OptionGroup var options: ReadOptions

    func run() async throws {
        let format = try options.eventFormat()
        try await withClient(options.server) { client in
            for var cursor in try await options.cursors(client) {
                let end = try await client.info(cursor.segment).length
                while cursor.offset < end { _ = try await cursor.step(client, wait: .zero, format: format) }
            }
        }
    }
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Like read, then follow new events until interrupted (or until every segment is sealed).")
    @OptionGroup var options: ReadOptions
    @Option(name: .long, help: "Longest wait of one tail request, in seconds.") var poll: Int = 30

    func run() async throws {
        let format = try options.eventFormat()
        let wait = Duration.seconds(poll)
        try await withClient(options.server) { client in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for cursor in try await options.cursors(client) {
                    group.addTask {
                        var cursor = cursor
                        while true {
                            let info = try await cursor.step(client, wait: wait, format: format)
                            if info.sealed && cursor.offset >= info.length { return }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}
