import EddyTestSupport
import Foundation
import Synchronization
import Testing

@testable import CacheCore
@testable import StreamModel

@Suite("BlockCache")
struct BlockCacheTests {
    static let stream = try! StreamName(parsing: "cache/test")

    static func block(_ segment: UInt32, _ index: UInt64) -> BlockID {
        BlockID(segment: SegmentID(stream: stream, number: segment), index: index)
    }

    /// The full content of a block: bytes derived from its identity, so any mix-up shows.
    static func content(_ segment: UInt32, _ index: UInt64, length: Int) -> [UInt8] {
        pseudoRandomBytes(length, seed: UInt64(segment) &* 0x9E37_79B9_7F4A_7C15 ^ index &* 0xC2B2_AE3D_27D4_EB4F)
    }

    func cache(_ capacity: Int64, policy: PolicyKind = .s3fifo, residency: Residency = .plain, shards: Int = 4) throws
        -> BlockCache
    {
        var c = BlockCacheConfiguration(capacity: capacity)
        c.policy = policy
        c.residency = residency
        c.shards = shards
        return try BlockCache(configuration: c)
    }

    @Test("insert, get, grow a tail block, remove")
    func basics() throws {
        let c = try cache(1 << 20)
        let b = Self.block(0, 3)
        #expect(try c.get(b) == nil)
        let full = Self.content(0, 3, length: 4000)
        #expect(c.insert(b, bytes: Array(full.prefix(1000))))
        #expect(try c.get(b) == Array(full.prefix(1000)))
        c.insert(b, bytes: full)  // the tail block grew
        #expect(try c.get(b) == full)
        c.insert(b, bytes: Array(full.prefix(10)))  // a shorter copy never replaces a longer one
        #expect(try c.get(b) == full)
        c.remove(b)
        #expect(try c.get(b) == nil)
        let s = c.stats
        #expect(s.hits == 3 && s.misses == 2 && s.entries == 0 && s.storedBytes == 0)
        #expect(c.arena.allocated == 0)
        #expect(throws: EddyError.self) { try cache(100, shards: 4) }
    }

    @Test("the byte budget holds, metadata included, under eviction")
    func budget() throws {
        let capacity: Int64 = 200_000
        let c = try cache(capacity, shards: 2)
        for i in 0..<500 {
            c.insert(
                Self.block(UInt32(i % 7), UInt64(i)),
                bytes: Self.content(UInt32(i % 7), UInt64(i), length: 1000 + i * 13 % 5000))
            #expect(c.chargedBytes <= capacity)
            #expect(c.arena.allocated <= capacity)
        }
        let s = c.stats
        #expect(s.evictions > 0 && s.entries > 0)
        #expect(s.storedBytes + Int64(s.entries) * c.configuration.entryOverhead == c.chargedBytes)
    }

    @Test("zstd residency stores more in the same budget and returns the same bytes")
    func compression() throws {
        let text = Array(String(repeating: "{\"event\":\"order\",\"user\":12345,\"amount\":42.5},", count: 2000).utf8)
        let c = try cache(1 << 20, residency: .zstd(level: 1))
        c.insert(Self.block(1, 1), bytes: text)
        #expect(try c.get(Self.block(1, 1)) == text)
        #expect(c.stats.compressionRatio > 5, "ratio \(c.stats.compressionRatio)")
        let random = Self.content(1, 2, length: 10_000)  // incompressible: kept plain
        c.insert(Self.block(1, 2), bytes: random)
        #expect(try c.get(Self.block(1, 2)) == random)
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    @Test("concurrent misses on one block load it once; every waiter gets the bytes")
    func coalescing() async throws {
        let c = try cache(1 << 22)
        let calls = Counter()
        let b = Self.block(2, 9)
        let expected = Self.content(2, 9, length: 3000)
        let results = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await c.getOrLoad(b) {
                        calls.value.add(1, ordering: .relaxed)
                        try await Task.sleep(for: .milliseconds(100))
                        return expected
                    }
                }
            }
            var all: [[UInt8]] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(calls.value.load(ordering: .relaxed) == 1)
        #expect(results.count == 50 && results.allSatisfy { $0 == expected })
        #expect(c.stats.loads == 1)
    }

    struct LoadFailed: Error {}

    @Test("a failed load reaches every waiter and caches nothing; a cancelled waiter does not cancel the load")
    func failureAndCancellation() async throws {
        let c = try cache(1 << 22)
        let b = Self.block(3, 1)
        let failures = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<10 {
                group.addTask {
                    do {
                        _ = try await c.getOrLoad(b) {
                            try await Task.sleep(for: .milliseconds(50))
                            throw LoadFailed()
                        }
                        return false
                    } catch is LoadFailed {
                        return true
                    }
                }
            }
            var n = 0
            for try await failed in group where failed { n += 1 }
            return n
        }
        #expect(failures == 10)
        #expect(try c.get(b) == nil)

        let calls = Counter()
        let bytes = Self.content(3, 1, length: 100)
        let loader: @Sendable () async throws -> [UInt8] = {
            calls.value.add(1, ordering: .relaxed)
            try? await Task.sleep(for: .milliseconds(200))
            return bytes
        }
        let cancelled = Task { try await c.getOrLoad(b, load: loader) }
        try await Task.sleep(for: .milliseconds(20))
        let kept = Task { try await c.getOrLoad(b, load: loader) }
        try await Task.sleep(for: .milliseconds(20))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(try await kept.value == bytes)
        #expect(calls.value.load(ordering: .relaxed) == 1)
        #expect(try c.get(b) == bytes)
    }

    @Test(
        "stress: many threads, random gets, inserts and loads; budget holds and every block returned is right",
        arguments: [(PolicyKind.s3fifo, Residency.plain), (.lru, .plain), (.stream, .plain), (.arc, .zstd(level: 1))])
    func stress(policy: PolicyKind, residency: Residency) async throws {
        let capacity: Int64 = 256 << 10
        let c = try cache(capacity, policy: policy, residency: residency, shards: 4)
        let wrong = Counter()
        let overBudget = Counter()
        let served = Counter()
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var rng = SystemRandomNumberGenerator()
                    for i in 0..<2000 {
                        let segment = UInt32.random(in: 0..<8, using: &rng)
                        let index = UInt64.random(in: 0..<64, using: &rng)
                        let full = 512 + Int(index) * 64
                        let b = BlockCacheTests.block(segment, index)
                        switch (i + worker) % 3 {
                        case 0:
                            // A tail block may be cached with a prefix of its bytes.
                            let length = Int.random(in: 1...full, using: &rng)
                            c.insert(b, bytes: BlockCacheTests.content(segment, index, length: length))
                        case 1:
                            if let got = try? c.get(b) {
                                served.value.add(1, ordering: .relaxed)
                                if got != Array(BlockCacheTests.content(segment, index, length: got.count)) {
                                    wrong.value.add(1, ordering: .relaxed)
                                }
                            }
                        default:
                            let got = try? await c.getOrLoad(b) {
                                BlockCacheTests.content(segment, index, length: full)
                            }
                            if let got {
                                served.value.add(1, ordering: .relaxed)
                                if got != Array(BlockCacheTests.content(segment, index, length: got.count)) {
                                    wrong.value.add(1, ordering: .relaxed)
                                }
                            }
                        }
                        if c.arena.allocated > capacity || c.chargedBytes > capacity {
                            overBudget.value.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
        }
        #expect(wrong.value.load(ordering: .relaxed) == 0)
        #expect(overBudget.value.load(ordering: .relaxed) == 0)
        #expect(served.value.load(ordering: .relaxed) > 500)
        let s = c.stats
        #expect(s.evictions > 0)
        #expect(s.storedBytes + Int64(s.entries) * c.configuration.entryOverhead == c.chargedBytes)
    }
}
