import ArgumentParser
import Foundation
import Logging
import SegmentStore
import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// The child of the crash test (`Tests/EddyCLITests/CrashTests.swift`): it opens the store embedded, appends
/// forever from several writers with writer IDs, and prints `ACK <writer> <eventNumber> <offset>` after each
/// acknowledgement. The test SIGKILLs it at random moments and checks that every acknowledged event is there
/// exactly once, in order. Each writer resumes from the store's last event number for it.
struct CrashWriter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-writer", abstract: "Crash-test child: append forever, print acknowledgements.",
        shouldDisplay: false)

    @Option(name: .long) var data: String
    @Option(name: .long) var writers: Int = 4
    @Option(name: .long) var io: String = "auto"
    /// Written into every payload (`w<writer>-<number>-<tag>`), so the test can tell which run wrote an event:
    /// an acknowledged event lost and rewritten by a later run carries the later tag.
    @Option(name: .long) var tag: String = ""

    static let stream = try! StreamName(parsing: "crash/test")

    func run() async throws {
        try await reportingErrors {
            var configuration = StoreConfiguration(dataDirectory: data)
            configuration.logger.logLevel = .warning
            configuration.ioBackend = IOBackend(rawValue: io) ?? .auto
            configuration.checkpointBytes = 256 << 10  // checkpoint often, so kills land in every phase
            let store = try SegmentStore(configuration: configuration)
            if (try? store.info(Self.stream)) == nil { try await store.createStream(Self.stream, segments: 2) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<writers {
                    group.addTask { try await Self.write(store: store, writer: w, tag: tag) }
                }
                try await group.waitForAll()
            }
        }
    }

    static func write(store: SegmentStore, writer w: Int, tag: String) async throws {
        let segment = SegmentID(stream: stream, number: UInt32(w % 2))
        let writerID = "w\(w)"
        var next = (try store.lastEventNumber(segment, writerID: writerID) ?? -1) + 1
        while true {
            // Batches of 1 to 4 events, so kills land inside multi-event batches too.
            let count = Int(next % 4) + 1
            var frames: [UInt8] = []
            for i in 0..<count {
                let payload = Array("\(writerID)-\(next + Int64(i))-\(tag)".utf8)
                try EventFrame.encode(Event(routingKey: writerID, timestamp: next, payload: payload), into: &frames)
            }
            let ack = try await store.append(segment, frames: frames, writerID: writerID, firstEventNumber: next)
            let line = "ACK \(w) \(next) \(count) \(ack.firstOffset)\n"
            _ = line.withCString { Glibc.write(1, $0, strlen($0)) }
            next += Int64(count)
        }
    }
}
