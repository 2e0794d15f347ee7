import ArgumentParser
import Foundation
import NIOCore
import StoreClient
import StreamModel
import Synchronization

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: appends to the store, reads and fan-out through the ring, the block cache in process.",
        subcommands: [
            BenchAppend.self, BenchRead.self, BenchFanout.self, BenchCache.self, BenchNIO.self, BenchQueue.self,
        ])
}

struct BenchAppend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "append",
        abstract: "Durable append throughput and latency: events/s, MB/s, p50/p99 per append request.",
        discussion: """
            W writers, each with its own connection and --inflight requests in progress, append batches of
            --batch events of --size payload bytes until --events are acknowledged (or, with --duration, for that
            many seconds). Every acknowledgement means
            the batch is on disk (fdatasync). The batch is framed once and resent, so the figure measures the
            network and the store, not the client's framing.
            """)

    @Option(name: .long, help: "Events to append in all.") var events: Int = 1_000_000
    @Option(name: .long, help: "Append for this many seconds instead of until --events are acknowledged.")
    var duration: Double?
    @Option(name: .long, help: "Payload bytes per event.") var size: Int = 100
    @Option(name: .long, help: "Writers (connections).") var writers: Int = 4
    @Option(name: .long, help: "Events per append request.") var batch: Int = 1000
    @Option(name: .long, help: "Append requests in flight per writer.") var inflight: Int = 2
    @Option(name: .long, help: "Segments of the bench stream.") var segments: UInt32 = 4
    @Option(
        name: .long,
        help: """
            Offer this many events/s in all instead of as many as the store takes: each request is sent at its \
            scheduled time and its latency counts from then, so time spent behind schedule is included.
            """)
    var rate: Double?
    @Option(name: .long, help: "Stream to write (created if missing, deleted after unless --keep).")
    var stream: String?
    @Flag(name: .long, help: "Keep the bench stream afterwards.") var keep = false
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await reportingErrors {
            guard events > 0, size >= 0, writers > 0, batch > 0, inflight > 0 else {
                throw EddyError(.invalidArgument, "--events, --writers, --batch and --inflight must be positive")
            }
            if let duration, !(duration > 0) {
                throw EddyError(.invalidArgument, "--duration must be a positive number of seconds")
            }
            if let rate, !(rate > 0) { throw EddyError(.invalidArgument, "--rate must be a positive events/s") }
            // With --rate each of the writers x inflight senders sends one request per `interval`.
            let interval = rate.map { Duration.seconds(Double(batch * writers * inflight) / $0) }
            let name = try parseStream(stream ?? "bench/append-\(UInt32.random(in: 0...UInt32.max))")
            let admin = try await connectStore(server)
            if (try? await admin.info(name)) == nil { try await admin.createStream(name, segments: segments) }
            let segmentCount = try await admin.info(name).segments.count

            var frames: [UInt8] = []
            let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size)
            for _ in 0..<batch {
                try EventFrame.encode(Event(routingKey: nil, timestamp: 0, payload: payload), into: &frames)
            }
            let batchBuffer = ByteBuffer(bytes: frames)
            // With --duration the writers issue requests until the deadline; the count is only a bound then.
            let requests = duration == nil ? (events + batch - 1) / batch : Int.max
            let issued = Counter()
            let done = Counter()

            var connections: [StoreClient] = []
            for _ in 0..<writers { connections.append(try await connectStore(server)) }
            let clients = connections
            let start = ContinuousClock.now
            let deadline = duration.map { start + .milliseconds(Int64($0 * 1000)) }
            let progress = Task {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(1))
                    let n = done.value.load(ordering: .relaxed) * batch
                    let seconds = (ContinuousClock.now - start).inSeconds
                    FileHandle.standardError.write(
                        Data("... \(n) events, \(Int(Double(n) / seconds)) events/s\n".utf8))
                }
            }
            let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for w in 0..<writers {
                    for slot in 0..<inflight {
                        group.addTask {
                            var mine: [Double] = []
                            let segment = SegmentID(stream: name, number: UInt32(w % segmentCount))
                            // Senders start spread over one interval, so the offered load is even.
                            var due = interval.map {
                                start + $0 * (Double(w * inflight + slot) / Double(writers * inflight))
                            }
                            while issued.value.add(1, ordering: .relaxed).oldValue < requests {
                                if let at = due, at > ContinuousClock.now { try await Task.sleep(until: at) }
                                let t0 = due ?? ContinuousClock.now
                                if let interval { due = t0 + interval }
                                _ = try await clients[w].append(segment, frames: batchBuffer)
                                mine.append((ContinuousClock.now - t0).inSeconds)
                                done.value.add(1, ordering: .relaxed)
                                // Checked after a request, so even the shortest --duration measures one.
                                if let deadline, ContinuousClock.now >= deadline { break }
                            }
                            return mine
                        }
                    }
                }
                var all: [Double] = []
                for try await part in group { all += part }
                return all.sorted()
            }
            let elapsed = (ContinuousClock.now - start).inSeconds
            progress.cancel()
            for c in clients { await c.close() }
            if !keep { try await admin.deleteStream(name) }
            await admin.close()

            let completed = done.value.load(ordering: .relaxed)
            let total = Double(completed * batch)
            let framedBytes = Double(completed) * Double(frames.count)
            func percentile(_ p: Double) -> Double {
                latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
            }
            print("appended \(completed * batch) events of \(size) bytes in \(String(format: "%.2f", elapsed)) s")
            print("  \(writers) writers x \(inflight) in flight, \(batch) events per request, \(segmentCount) segments")
            if let rate {
                print(String(format: "  offered: %.0f events/s (latency from each request's scheduled time)", rate))
            }
            print(String(format: "  events/s: %.0f", total / elapsed))
            print(
                String(
                    format: "  MB/s: %.1f payload, %.1f framed", total * Double(size) / elapsed / 1e6,
                    framedBytes / elapsed / 1e6))
            print(
                String(
                    format: "  append latency per request: p50 %.3f ms, p99 %.3f ms, max %.3f ms",
                    percentile(0.50) * 1000, percentile(0.99) * 1000, (latencies.last ?? 0) * 1000))
        }
    }

}

/// A shared counter for tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
