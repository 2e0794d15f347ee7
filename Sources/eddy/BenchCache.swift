import ArgumentParser
import CacheCore
import Foundation
import StreamModel
import Synchronization
import Workloads

struct BenchCache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Block cache: how many blocks of event data fit (plain or zstd) and how fast gets are.",
        discussion: """
            Fills a BlockCache with blocks of framed JSON-like events (the kind of data a stream carries), then
            runs random gets from --threads threads for --seconds. Prints blocks resident, the compression ratio,
            hit ratio, gets/s and GB/s served.
            """)

    @Option(name: .long, help: "Cache budget in MiB.") var capacityMib: Int = 256
    @Option(name: .long, help: "Block size in KiB.") var blockKib: Int = 1024
    @Option(name: .long, help: "Blocks offered to the cache.") var blocks: Int = 512
    @Option(name: .long, help: "plain or zstd.") var residency: String = "plain"
    @Option(name: .long, help: "zstd level with --residency zstd.") var level: Int32 = 1
    @Option(name: .long, help: "Policy.") var policy: String = "s3fifo"
    @Option(name: .long, help: "Threads doing gets.") var threads: Int = 2
    @Option(name: .long, help: "Seconds of gets.") var seconds: Double = 3

    func run() async throws {
        try await reportingErrors {
            guard capacityMib > 0, blockKib > 0, blocks > 0, threads > 0, seconds > 0 else {
                throw EddyError(.invalidArgument, "all sizes, counts and durations must be positive")
            }
            var configuration = BlockCacheConfiguration(capacity: Int64(capacityMib) << 20)
            configuration.policy = try PolicyKind.parse(policy).0
            configuration.blockSize = Int64(blockKib) << 10
            switch residency {
            case "plain": configuration.residency = .plain
            case "zstd": configuration.residency = .zstd(level: level)
            default: throw EddyError(.invalidArgument, "unknown --residency '\(residency)': use plain or zstd")
            }
            let cache = try BlockCache(configuration: configuration)
            let stream = try StreamName(parsing: "bench/cache")
            let blockSize = blockKib << 10
            var rng = SeededRandom(seed: 1)
            // Sixteen distinct blocks of event data, reused round-robin: generating is not what is measured.
            let samples = try (0..<16).map { _ in try Self.eventBlock(size: blockSize, rng: &rng) }
            let fillStart = ContinuousClock.now
            for i in 0..<blocks {
                let block = BlockID(segment: SegmentID(stream: stream, number: UInt32(i % 64)), index: UInt64(i))
                cache.insert(block, bytes: samples[i % samples.count])
            }
            let fillSeconds = (ContinuousClock.now - fillStart).inSeconds
            let filled = cache.stats
            print(
                "\(configuration.residency == .plain ? "plain" : "zstd level \(level)") residency, \(configuration.policy.rawValue), budget \(capacityMib) MiB, \(blockKib) KiB blocks"
            )
            print(
                String(
                    format: "  filled %d of %d blocks in %.2f s (%.0f MB/s in)", filled.entries, blocks, fillSeconds,
                    Double(blocks * blockSize) / fillSeconds / 1e6))
            print(
                String(
                    format: "  compression ratio %.2f (%lld logical bytes in %lld stored)", filled.compressionRatio,
                    filled.logicalBytes, filled.storedBytes))

            let gets = Atomic<Int>(0)
            let bytes = Atomic<Int>(0)
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            let blockCount = blocks
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                var r = SeededRandom(seed: UInt64(t + 7))
                var n = 0
                var served = 0
                while ContinuousClock.now < deadline {
                    for _ in 0..<64 {
                        let i = Int(r.next() % UInt64(blockCount))
                        let block = BlockID(
                            segment: SegmentID(stream: stream, number: UInt32(i % 64)), index: UInt64(i))
                        if let b = try? cache.get(block) { served += b.count }
                        n += 1
                    }
                }
                gets.add(n, ordering: .relaxed)
                bytes.add(served, ordering: .relaxed)
            }
            let s = cache.stats
            let total = gets.load(ordering: .relaxed)
            print(
                String(
                    format: "  %d threads: %.0f gets/s, %.2f GB/s served, hit ratio %.3f", threads,
                    Double(total) / seconds, Double(bytes.load(ordering: .relaxed)) / seconds / 1e9,
                    Double(s.hits) / Double(max(1, s.hits + s.misses))))
        }
    }

    /// A block of framed events with JSON payloads: repetitive keys, varying values, like real event data.
    static func eventBlock(size: Int, rng: inout SeededRandom) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(size + 512)
        let kinds = ["order.created", "order.paid", "cart.updated", "user.login", "shipment.sent"]
        var t: Int64 = 1_790_000_000_000_000
        while out.count < size {
            t += Int64(rng.next() % 5000)
            let user = rng.next() % 100_000
            let payload =
                "{\"type\":\"\(kinds[Int(rng.next() % 5)])\",\"user\":\(user),\"session\":\"\(String(rng.next(), radix: 36))\",\"amount\":\(rng.next() % 100000 / 100).\(rng.next() % 100),\"items\":\(rng.next() % 9 + 1),\"region\":\"eu-west-\(rng.next() % 3 + 1)\"}"
            try EventFrame.encode(
                Event(routingKey: "user-\(user)", timestamp: t, payload: Array(payload.utf8)), into: &out)
        }
        return Array(out.prefix(size))
    }
}
