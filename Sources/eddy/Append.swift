import ArgumentParser
import EddyClient
import Foundation
import NIOCore
import StreamModel

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append one event per line of standard input; print each event's pointer once it is durable.",
        discussion: """
            Lines are sent in batches as they arrive; pointers are printed in input order. With --key every event
            goes to the key's segment; without, batches are spread round-robin over the segments. With --writer,
            retries are exactly-once: the writer continues from the event numbers the store already has. Without
            --writer, a fresh writer ID is made for the run, so a retry after a failover is exactly-once too.
            """)

    @Argument(help: "SCOPE/STREAM") var stream: String
    @Option(name: .long, help: "Routing key for every event.") var key: String?
    @Option(name: .long, help: "Writer ID for exactly-once appends.") var writer: String?
    @Option(name: .long, help: "Most events in one append request.") var batch: Int = 1000
    @Option(name: .long, help: "Most append requests in flight.") var inflight: Int = 16
    @OptionGroup var server: ServerOption

    func run() async throws {
        guard batch > 0, inflight > 0 else { throw ValidationError("--batch and --inflight must be positive") }
        try await withClient(server) { client in
            let name = try parseStream(stream)
            let info = try await client.info(name)
            let segmentCount = UInt32(info.segments.count)
            var nextNumber: [UInt32: Int64] = [:]
            if let writer {
                for s in info.segments {
                    nextNumber[s.segment.number] =
                        (try await client.lastEventNumber(s.segment, writerID: writer) ?? -1) + 1
                }
            }
            let runWriter = "eddy-append-\(UUID().uuidString)"
            var roundRobin = UInt32.random(in: 0..<segmentCount)
            var window: [(Task<AppendAck, any Error>, [Int])] = []
            var previous: [UInt32: Task<AppendAck, any Error>] = [:]
            let output = Output.shared

            func drainFirst() async throws {
                let (task, sizes) = window.removeFirst()
                let ack = try await task.value
                for p in ack.pointers(frameSizes: sizes) { output.line(p.description) }
                output.flush()
            }

            for await lines in LineReader.batches(maxBatch: batch) {
                let number: UInt32
                if let key {
                    number = RoutingKey.segment(for: key, segmentCount: segmentCount)
                } else {
                    number = roundRobin % segmentCount
                    roundRobin &+= 1
                }
                let segment = SegmentID(stream: name, number: number)
                var frames: [UInt8] = []
                var sizes: [Int] = []
                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                for line in lines {
                    let before = frames.count
                    try EventFrame.encode(Event(routingKey: key, timestamp: now, payload: line), into: &frames)
                    sizes.append(frames.count - before)
                }
                let first = nextNumber[number] ?? 0
                nextNumber[number] = first + Int64(lines.count)
                let buffer = ByteBuffer(bytes: frames)
                let writerID = writer ?? runWriter
                let task = client.appendInOrder(
                    segment, frames: buffer, writerID: writerID, firstEventNumber: first, after: previous[number])
                previous[number] = task
                window.append((task, sizes))
                if window.count >= inflight { try await drainFirst() }
            }
            while !window.isEmpty { try await drainFirst() }
        }
    }
}
