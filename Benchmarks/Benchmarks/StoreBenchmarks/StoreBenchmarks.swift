import Benchmark
import Foundation
import SegmentStore
import StreamModel

/// Micro-benchmarks of the store's hot paths. Figures are recorded in docs/benchmarks.md.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal], maxDuration: .seconds(3))

    let oneMiB = [UInt8](repeating: 0xA5, count: 1 << 20)
    Benchmark("CRC32C 1 MiB", configuration: .init(scalingFactor: .one)) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(CRC32C.checksum(oneMiB)) }
    }

    let event = Event(routingKey: "user-42", timestamp: 1, payload: [UInt8](repeating: 120, count: 100))
    Benchmark("EventFrame.encode 100-byte payload", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var out: [UInt8] = []
        out.reserveCapacity(200 * 1000)
        for _ in benchmark.scaledIterations {
            out.removeAll(keepingCapacity: true)
            try EventFrame.encode(event, into: &out)
        }
        blackHole(out)
    }

    let batch: [UInt8] = {
        var out: [UInt8] = []
        for _ in 0..<1000 { try! EventFrame.encode(event, into: &out) }
        return out
    }()
    Benchmark("EventFrame.frameSizes of a 1000-event batch", configuration: .init(scalingFactor: .one)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try batch.withBytes { (b) throws(EddyError) in try EventFrame.frameSizes(b) })
        }
    }

    // Durable appends of 1000-event batches from 8 concurrent appenders into an embedded store.
    Benchmark(
        "SegmentStore durable append, 1000 x 100 B per batch, 8 appenders", configuration: .init(scalingFactor: .one)
    ) { benchmark in
        let dir = NSTemporaryDirectory() + "eddy-bench-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var configuration = StoreConfiguration(dataDirectory: dir)
        configuration.logger.logLevel = .warning
        let store = try SegmentStore(configuration: configuration)
        defer { store.close() }
        let name = try StreamName(parsing: "bench/append")
        try await store.createStream(name, segments: 8)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for s in 0..<8 {
                    group.addTask {
                        _ = try await store.append(SegmentID(stream: name, number: UInt32(s)), frames: batch)
                    }
                }
                try await group.waitForAll()
            }
        }
        benchmark.stopMeasurement()
    }
}
