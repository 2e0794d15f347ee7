import Foundation
import StreamModel
import Testing

@testable import CacheCore
@testable import Workloads

/// Where long replays run: one at a time, off Swift's cooperative pool, so the rest of the suite keeps a core.
let replayQueue: OperationQueue = {
    let q = OperationQueue()
    q.maxConcurrentOperationCount = 1
    return q
}()

/// Runs `body` on a thread of ``replayQueue`` and waits for it: a replay of a long trace is seconds of CPU in a
/// debug build, and on Swift's cooperative pool (two threads here) it would starve every other test's tasks
/// meanwhile (servers' heartbeats, readiness polls).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        replayQueue.addOperation { continuation.resume(with: Result { try body() }) }
    }
}

@Suite("What-if: SHARDS miniature simulations", .serialized)
struct WhatIfTests {
    /// The full simulation's hit ratio of every policy and size, for comparison.
    static func fullHitRatios(_ trace: Trace, _ configuration: WhatIf.Configuration) throws -> [Double] {
        var out: [Double] = []
        for p in configuration.policies {
            let (kind, parameters) = try PolicyKind.parse(p)
            for bytes in configuration.cacheBytes {
                let policy = kind.make(capacity: bytes, parameters: parameters, objectSize: configuration.blockSize)
                let r = Simulator.run(trace, policy: policy, mode: .bytes)
                out.append(Double(r.requests - r.misses) / Double(r.requests))
            }
        }
        return out
    }

    static func replay(_ trace: Trace, into whatIf: WhatIf) {
        for i in 0..<trace.count {
            whatIf.record(trace.ids[i], size: Int64(trace.sizes[i]))
            if i % 50_000 == 0 { whatIf.replay() }
        }
        whatIf.replay()
    }

    @Test("at rate 1 every shadow equals the full simulation exactly")
    func exactAtRateOne() async throws { try await onOwnThread { try Self.exactAtRateOne() } }

    static func exactAtRateOne() throws {
        let t = TraceGenerator.zipf(objects: 5_000, alpha: 0.9, requests: 60_000, blockSize: 4096, seed: 3)
        let c = WhatIf.Configuration(
            policies: WhatIf.Configuration.allOnlinePolicies, cacheBytes: [200 * 4096, 1000 * 4096], blockSize: 4096)
        #expect(c.effectiveRate == 1)
        let w = try WhatIf(c)
        replay(t, into: w)
        let full = try fullHitRatios(t, c)
        let rows = w.rows()
        #expect(rows.count == c.policies.count * 2)
        for (row, expected) in zip(rows, full) {
            #expect(row.hitRatio == expected, "\(row.policy) @ \(row.cacheBytes)")
        }
        #expect(w.totals.requests == t.count && w.totals.sampled == t.count && w.totals.dropped == 0)
    }

    @Test("sampled at the automatic rate, every policy is within 0.02 of the full simulation")
    func sampledWithinTolerance() async throws { try await onOwnThread { try Self.sampledWithinTolerance() } }

    static func sampledWithinTolerance() throws {
        // 40k blocks, caches of 10k and 20k blocks: the automatic rate keeps 2048 blocks in the smaller shadow.
        let t = TraceGenerator.zipf(objects: 40_000, alpha: 0.8, requests: 400_000, blockSize: 4096, seed: 11)
        let c = WhatIf.Configuration(
            policies: WhatIf.Configuration.allOnlinePolicies, cacheBytes: [10_000 * 4096, 20_000 * 4096],
            blockSize: 4096)
        #expect(abs(c.effectiveRate - 0.2048) < 1e-9)
        let w = try WhatIf(c)
        replay(t, into: w)
        let totals = w.totals
        // The sample is spatial: about the rate's share of the requests, never all of them.
        #expect(Double(totals.sampled) > 0.1 * Double(t.count) && Double(totals.sampled) < 0.35 * Double(t.count))
        let full = try fullHitRatios(t, c)
        let worst = zip(w.rows(), full).map { abs($0.hitRatio - $1) }.max() ?? 1
        FileHandle.standardError.write(Data("what-if at rate \(c.effectiveRate): largest difference \(worst)\n".utf8))
        for (row, expected) in zip(w.rows(), full) {
            #expect(
                abs(row.hitRatio - expected) <= 0.02,
                "\(row.policy) @ \(row.cacheBytes): \(row.hitRatio) vs \(expected)")
        }
    }

    @Test("the governor's lowering of the rate starts the shadows again at the new scale, and only lowers")
    func lowering() async throws { try await onOwnThread { try Self.lowering() } }

    static func lowering() throws {
        let t = TraceGenerator.zipf(objects: 20_000, alpha: 0.9, requests: 40_000, blockSize: 4096, seed: 5)
        let w = try WhatIf(.init(policies: ["lru", "s3fifo"], cacheBytes: [2000 * 4096], blockSize: 4096))
        replay(t, into: w)
        #expect(w.totals.sampled == t.count && w.rate == 1)
        w.lower(to: 0.25)
        #expect(w.rate == 0.25 && w.totals.restarts == 1 && w.totals.sampled == 0 && w.totals.requests == 0)
        replay(t, into: w)
        let sampled = Double(w.totals.sampled) / Double(t.count)
        #expect(sampled > 0.1 && sampled < 0.45, "sampled \(sampled) of the requests at rate 0.25")
        #expect(w.rows().allSatisfy { $0.hitRatio > 0 && $0.hitRatio < 1 })
        w.lower(to: 0.5)
        #expect(w.rate == 0.25 && w.totals.restarts == 1)
    }

    @Test("bad configurations are refused with the reason")
    func refusals() {
        #expect(throws: EddyError.self) {
            try WhatIf(.init(policies: ["belady"], cacheBytes: [1 << 20], blockSize: 4096))
        }
        #expect(throws: EddyError.self) {
            try WhatIf(.init(policies: ["nope"], cacheBytes: [1 << 20], blockSize: 4096))
        }
        #expect(throws: EddyError.self) { try WhatIf(.init(policies: ["lru"], cacheBytes: [], blockSize: 4096)) }
        #expect(throws: EddyError.self) {
            try WhatIf(.init(policies: ["lru"], cacheBytes: [1 << 20], rate: 1.5, blockSize: 4096))
        }
        #expect(WhatIf.Configuration.automaticRate(cacheBytes: [64 << 20], blockSize: 1 << 20) == 1)
        #expect(
            WhatIf.Configuration.automaticRate(cacheBytes: [64 << 30, 32 << 30], blockSize: 1 << 20) == 2048.0 / 32768)
    }
}
