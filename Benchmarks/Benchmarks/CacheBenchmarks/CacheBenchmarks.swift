import Benchmark
import CacheCore
import Foundation
import StreamModel

/// Policy and cache speed. Figures are recorded in docs/benchmarks.md.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.throughput, .wallClock], maxDuration: .seconds(2))
    let kinds: [PolicyKind] = [.lru, .fifo, .clock, .sieve, .s3fifo, .arc, .twoQ, .lirs, .lfu, .wtinylfu, .stream]

    // Pseudo-random IDs, the same for every policy.
    var x: UInt64 = 1
    let hitIDs: [UInt64] = (0..<1_000_000).map { _ in
        x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (x >> 33) % 100_000
    }

    for kind in kinds {
        Benchmark("\(kind.rawValue) hit", configuration: .init(scalingFactor: .mega)) { benchmark in
            let policy = kind.make(capacity: 200_000)
            for id in 0..<UInt64(100_000) { _ = policy.access(CacheRequest(id: id)) }
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                blackHole(policy.lookup(CacheRequest(id: hitIDs[i % hitIDs.count])))
            }
        }
        Benchmark("\(kind.rawValue) miss+insert", configuration: .init(scalingFactor: .mega)) { benchmark in
            let policy = kind.make(capacity: 10_000)
            var next: UInt64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                next += 1
                blackHole(policy.access(CacheRequest(id: next)))
            }
        }
    }

    // The block cache from two threads at once, per policy: 4 KiB blocks, about 90 % hits.
    for kind in [PolicyKind.lru, .clock, .sieve, .s3fifo, .arc, .stream] {
        Benchmark("BlockCache get, 2 threads, \(kind.rawValue)", configuration: .init(scalingFactor: .kilo)) {
            benchmark in
            var configuration = BlockCacheConfiguration(capacity: 64 << 20)
            configuration.policy = kind
            let cache = try BlockCache(configuration: configuration)
            let stream = try StreamName(parsing: "bench/cache")
            let segments = (0..<UInt32(64)).map { SegmentID(stream: stream, number: $0) }
            let bytes = [UInt8](repeating: 7, count: 4096)
            for i in 0..<UInt64(10_000) {
                cache.insert(BlockID(segment: segments[Int(i % 64)], index: i), bytes: bytes)
            }
            let perThread = benchmark.scaledIterations.count / 2
            benchmark.startMeasurement()
            DispatchQueue.concurrentPerform(iterations: 2) { t in
                var y = UInt64(t + 1)
                for _ in 0..<perThread {
                    y = y &* 6_364_136_223_846_793_005 &+ 1
                    let i = (y >> 33) % 11_000
                    blackHole(try? cache.get(BlockID(segment: segments[Int(i % 64)], index: i)))
                }
            }
        }
    }
}
