import StreamModel
import Testing

@testable import CacheCore

@Suite("reader hints")
struct ReaderHintTests {
    static func key(_ segment: UInt32, _ block: UInt64) -> UInt64 { BlockKey(segment: segment, block: block).rawValue }

    @Test("stream policy with hints: blocks behind every reader go first, blocks ahead of a catch-up reader stay")
    func hintsSteerEviction() {
        let policy = StreamAware(capacity: 16)
        var evicted: [UInt64] = []
        policy.evictionHandler = { evicted.append($0) }
        // A segment whose head is at block 200 (tail readers there), and history blocks 100..109 in the cache.
        for b in 195...200 { _ = policy.access(CacheRequest(id: Self.key(0, UInt64(b)))) }
        for b in 100..<110 { _ = policy.access(CacheRequest(id: Self.key(0, UInt64(b)))) }
        // The node says: one catch-up reader at block 104, one tail reader at 200.
        policy.readerMoved(1, segment: 0, block: 104, tail: false)
        policy.readerMoved(2, segment: 0, block: 200, tail: true)
        evicted.removeAll()
        // New blocks of another segment push four blocks out.
        for b in 0..<4 { _ = policy.access(CacheRequest(id: Self.key(1, UInt64(b)))) }
        let behind = Set((100..<104).map { Self.key(0, UInt64($0)) })
        let ahead = Set((104..<110).map { Self.key(0, UInt64($0)) })
        #expect(!evicted.isEmpty, "\(evicted.map { (BlockKey(rawValue: $0).segment, BlockKey(rawValue: $0).block) })")
        #expect(
            evicted.allSatisfy { !ahead.contains($0) },
            "a block ahead of the catch-up reader was evicted: \(evicted.map { (BlockKey(rawValue: $0).segment, BlockKey(rawValue: $0).block) })"
        )
        #expect(Set(evicted) == behind, "the four blocks behind every reader went first: \(evicted)")
    }

    @Test("generic policies ignore hints; BlockCache passes them only to reader-aware policies")
    func genericIgnore() throws {
        var c = BlockCacheConfiguration(capacity: 1 << 20)
        c.policy = .lru
        let cache = try BlockCache(configuration: c)
        let block = BlockID(segment: SegmentID(stream: try StreamName(parsing: "h/x"), number: 0), index: 1)
        cache.readerMoved(1, to: block, tail: false)
        cache.readerLeft(1)
        #expect(cache.stats.hits == 0 && cache.stats.misses == 0)
    }
}
