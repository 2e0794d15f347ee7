import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import Testing

@testable import StreamModel

@Suite("graceful shutdown", .serialized)
struct LifecycleTests {
    @Test(
        "SIGTERM a node under appends: it drains and exits 0, no acknowledged append is lost, the writers fail over, and its write-back queue leaves no message stuck"
    )
    func drainUnderLoad() async throws {
        let objects = temporaryPath("drain-objects")
        let ring = try Ring(
            nodes: 2,
            nodeArguments: [
                "--block-size", "64K", "--object-store", "file://\(objects)", "--flush-idle", "1",
                "--shutdown-grace", "20",
            ])
        defer {
            ring.stopAll()
            try? FileManager.default.removeItem(atPath: objects)
        }
        let name = try StreamName(parsing: "drain/events")
        let client = try await RingTests.client(ring.nodeAddresses)
        try await client.createStream(name, segments: 4)
        let victim = ring.nodeAddresses.firstIndex(of: client.server.description)!

        // Four writers, one per segment, each appending numbered 1 KB events one batch at a time; a writer
        // records each event number once its append is acknowledged.
        let acknowledged = Locked<[Int]>([0, 0, 0, 0])
        let stop = Locked(false)
        let padding = String(repeating: "x", count: 1000)
        let writers = (0..<4).map { s in
            Task {
                var i = 0
                while !stop.get() {
                    var frames: [UInt8] = []
                    try EventFrame.encode(
                        Event(routingKey: nil, timestamp: 0, payload: Array("s\(s)-\(i) \(padding)".utf8)),
                        into: &frames)
                    do {
                        _ = try await client.append(
                            SegmentID(stream: name, number: UInt32(s)), frames: ByteBuffer(bytes: frames),
                            writerID: "writer-\(s)", firstEventNumber: Int64(i))
                    } catch {
                        throw CLIError("writer \(s), event \(i): \(error)")
                    }
                    i += 1
                    var counts = acknowledged.get()
                    counts[s] = i
                    acknowledged.set(counts)
                }
            }
        }
        try await Task.sleep(for: .seconds(1.5))
        let before = acknowledged.get()
        let status = ring.nodes[victim].stop()  // SIGTERM, then wait for the exit
        try await Task.sleep(for: .seconds(1.5))
        stop.set(true)
        for w in writers { try await w.value }
        let after = acknowledged.get()
        let log = ring.nodes[victim].log
        #expect(status == 0, "\(log)")
        #expect(log.contains("draining") && log.contains("drained"), "\(log)")
        #expect(client.failovers >= 1)
        for s in 0..<4 {
            #expect(after[s] > before[s], "writer \(s) went on after the node stopped: \(before) -> \(after)")
        }

        // Every acknowledged event is in its segment, once, in order.
        let reader = try await RingTests.client(
            ring.nodeAddresses.enumerated().filter { $0.offset != victim }.map(\.element))
        var got: [[String]] = [[], [], [], []]
        let cursors = (0..<4).map { SegmentCursor(segment: SegmentID(stream: name, number: UInt32($0)), offset: 0) }
        for try await e in reader.events(cursors, follow: false) {
            let text = String(decoding: e.event.payload, as: UTF8.self)
            let label = String(text.prefix { $0 != " " })  // s<segment>-<number>
            got[Int(label.dropFirst().prefix { $0 != "-" })!].append(label)
        }
        for s in 0..<4 {
            // An append cut by the stop may have landed without its acknowledgement: at most one more event.
            #expect(
                got[s].count >= after[s] && got[s].count <= after[s] + 1, "segment \(s): \(got[s].count) of \(after[s])"
            )
            #expect(got[s] == (0..<got[s].count).map { "s\(s)-\($0)" }, "segment \(s) in order, each once")
        }

        // The node comes back: the flushes its queue held finish without waiting out a lease (30 s) that a
        // cancelled worker would have left.
        try ring.addNode(victim)
        let restarted = ring.nodes.last!
        var depth = -1
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            let answer = try eddy(["admin", "queue", "stats", "--server", ring.nodeAddresses[victim]])
            if answer.status == 0,
                let object = try? JSONSerialization.jsonObject(with: Data(answer.stdout.utf8)) as? [String: Any],
                let lanes = object["lanes"] as? [[String: Any]]
            {
                depth = lanes.reduce(0) {
                    $0 + ($1["ready"] as? Int ?? 0) + ($1["delayed"] as? Int ?? 0) + ($1["leased"] as? Int ?? 0)
                }
                if depth == 0 { break }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(depth == 0, "the restarted node's queue still holds \(depth) messages: \(restarted.log)")
        await reader.close()
        await client.close()
    }
}
