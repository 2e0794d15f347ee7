import ArgumentParser
import EddyClient
import Foundation
import NIOCore
import ObjectStorage
import StreamModel
import WriteBack

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write every event of a stream to object storage as one object each, named by its event pointer.",
        discussion: """
            The key of an event is PREFIX/ followed by its pointer's text (scope/stream/SEGMENT/OFFSET+SIZE: fixed
            width, fixed depth), so a listing of PREFIX/scope/stream/SEGMENT/ is that segment's order, and a consumer
            with only S3 access reads the stream. The body is the event's payload. Objects are written create-only:
            exporting again writes only what is new. --from resumes after pointers (as `eddy read --from`).
            """)

    @Argument(help: "SCOPE/STREAM") var stream: String
    @Option(name: .long, help: "Where: file://DIR or s3://BUCKET/PREFIX.") var to: String
    @Option(name: .long, help: "Start after this event pointer (repeat for several segments).") var from: [String] = []
    @Option(name: .long, help: "Objects written at once.") var concurrency: Int = 16
    @OptionGroup var s3: S3Options
    @OptionGroup var server: ServerOption

    func run() async throws {
        guard (1...256).contains(concurrency) else { throw ValidationError("--concurrency must be 1...256") }
        let location = try s3.location(to)
        let store = try location.makeStore(environment: ProcessInfo.processInfo.environment)
        let prefix = location.prefix
        let limit = concurrency
        try await withClient(server) { client in
            let cursors = try await readCursors(client, stream: stream, from: from)
            var written = 0
            var present = 0
            let progress = ProgressLine(what: "exporting \(stream)", unit: "events")
            try await withThrowingTaskGroup(of: PutOutcome.self) { group in
                var inFlight = 0
                for try await e in client.events(cursors, follow: false) {
                    let key = ObjectKey.join(prefix, e.pointer.description)
                    let body = ByteBuffer(bytes: e.event.payload)
                    group.addTask { try await store.put(key, body: body, mode: .createOnly) }
                    inFlight += 1
                    if inFlight >= limit, let outcome = try await group.next() {
                        inFlight -= 1
                        if outcome == .written { written += 1 } else { present += 1 }
                    }
                    progress.update(UInt64(written + present))
                }
                for try await outcome in group {
                    if outcome == .written { written += 1 } else { present += 1 }
                }
            }
            print("exported \(written + present) events to \(location) (\(written) written, \(present) already there)")
        }
    }
}
