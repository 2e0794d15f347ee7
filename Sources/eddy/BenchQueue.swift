import ArgumentParser
import Foundation
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBackQueue

struct BenchQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "The write-back queue broker: messages/s through enqueue, lease and ack, journal durable in a store.",
        discussion: """
            Runs a broker in this process with its journal on a fresh stream of the store at --server (what a node
            does), P producers enqueueing (each enqueue returns once its record is durable) and C consumers
            leasing and acking, until --messages are acked. Reports messages/s and enqueue latency.
            """)

    @Option(name: .long, help: "Messages in all.") var messages: Int = 100_000
    @Option(name: .long, help: "Producers (concurrent enqueuers).") var producers: Int = 64
    @Option(name: .long, help: "Consumers (concurrent lease + ack loops).") var consumers: Int = 8
    @Option(name: .long, help: "Payload bytes per message.") var size: Int = 64
    @Flag(name: .long, help: "One JSON object instead of text.") var json = false
    @OptionGroup var server: ServerOption

    func run() async throws {
        try await reportingErrors {
            guard messages > 0, producers > 0, consumers > 0, size >= 0 else {
                throw EddyError(.invalidArgument, "--messages, --producers and --consumers must be positive")
            }
            let address = try server.addresses()[0]
            let stream = try StreamName(scope: "_bench", stream: "queue-\(UInt32.random(in: 0...UInt32.max))")
            let journal = try await StoreJournalLog(stream: stream) { try await StoreClient.connect(to: address) }
            var configuration = QueueConfiguration()
            configuration.concurrencyCaps = [.critical: consumers, .standard: consumers, .bulk: consumers]
            let queue = try await WriteBackQueue.open(configuration: configuration, journal: journal)
            let payload = [UInt8](repeating: 7, count: size)
            let issued = Counter()
            let acked = Counter()
            let start = ContinuousClock.now
            let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
                for _ in 0..<producers {
                    group.addTask {
                        var mine: [Double] = []
                        while issued.value.add(1, ordering: .relaxed).oldValue < messages {
                            let t0 = ContinuousClock.now
                            try await queue.enqueue("bench", qos: .standard, payload: payload, cost: size)
                            mine.append((ContinuousClock.now - t0).inSeconds)
                        }
                        return mine
                    }
                }
                for _ in 0..<consumers {
                    group.addTask {
                        while acked.value.load(ordering: .relaxed) < messages {
                            guard let lease = await queue.lease(wait: .milliseconds(100)) else { continue }
                            try await lease.ack()
                            acked.value.add(1, ordering: .relaxed)
                        }
                        return []
                    }
                }
                var all: [Double] = []
                for try await part in group { all += part }
                return all.sorted()
            }
            let elapsed = (ContinuousClock.now - start).inSeconds
            await queue.shutdown()
            let admin = try await StoreClient.connect(to: address)
            _ = try? await admin.send(.deleteStream(stream))
            await admin.close()
            func percentile(_ p: Double) -> Double {
                latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
            }
            let rate = Double(messages) / elapsed
            if json {
                print(
                    "{\"messages\":\(messages),\"seconds\":\(elapsed),\"messages_per_second\":\(Int(rate)),"
                        + "\"enqueue_p50_ms\":\(percentile(0.5) * 1000),\"enqueue_p99_ms\":\(percentile(0.99) * 1000)}")
            } else {
                print(
                    "queue: \(messages) messages enqueued (journal durable), leased and acked in \(String(format: "%.2f", elapsed)) s"
                )
                print("  \(producers) producers, \(consumers) consumers, \(size)-byte payloads")
                print(String(format: "  messages/s: %.0f", rate))
                print(
                    String(
                        format: "  enqueue latency: p50 %.3f ms, p99 %.3f ms", percentile(0.5) * 1000,
                        percentile(0.99) * 1000))
            }
        }
    }
}
