import StreamModel
import Testing

@testable import CacheCore
@testable import Workloads

@Suite("Eviction policies: contract and known sequences")
struct PolicyTests {
    @Test("XXH64 of an id's 8 bytes matches the reference xxHash (values from python's xxhash, the C library)")
    func xxh64() {
        let expected: [(UInt64, UInt64, UInt64)] = [
            (0, 0x67bb_774d_39f5_d473, 0xc2a6_4453_b85a_5e79), (1, 0x071b_9484_a237_4097, 0x83e9_f36f_cb58_54bf),
            (42, 0xf78b_4ad5_3460_7625, 0xca6b_8301_1840_5888),
            (123_456_789, 0x0f9f_f923_bc79_7b26, 0xaa7d_e97a_bad7_cda4),
            (1 << 63 + 5, 0xd2d3_7459_8cb1_bfb2, 0x233d_65b0_a2a3_0866),
        ]
        for (value, seed0, seed1) in expected {
            #expect(XXH64.hash(value, seed: 0x1234_5678) == seed0, "\(value)")
            #expect(XXH64.hash(value, seed: 0x1234_4321) == seed1, "\(value)")
        }
    }

    /// Replays random requests and checks the contract against a model of the resident set kept only from
    /// what the policy reports: hits only for resident objects, misses only for absent ones, every eviction
    /// reported, and the occupied size equal to the model's and within the capacity.
    @Test("every policy keeps its contract", arguments: PolicyKind.allCases, [false, true])
    func contract(kind: PolicyKind, bytes: Bool) {
        var rng = SeededRandom(seed: 7)
        let capacity: Int64 = bytes ? 5_000 : 50
        var ids: [UInt64] = []
        for _ in 0..<20_000 {
            // A mix of hot objects, a scan and noise, over a few segments (so the stream policy has structure).
            let r = rng.next() % 10
            let id: UInt64 =
                r < 5
                ? BlockKey(segment: 1, block: rng.next() % 20).rawValue
                : r < 8
                    ? BlockKey(segment: 2, block: UInt64(ids.count)).rawValue
                    : BlockKey(segment: 3, block: rng.next() % 500).rawValue
            ids.append(id)
        }
        let sizes: [Int64] = ids.map { bytes ? Int64($0 % 97) * 3 + 20 : 1 }
        let next = Trace(ids: ids, sizes: sizes.map { UInt32($0) }, name: "t").nextAccessTimes()
        let policy = kind.make(capacity: capacity)
        var resident: [UInt64: Int64] = [:]
        var evicted: [UInt64] = []
        policy.evictionHandler = { evicted.append($0) }
        for i in ids.indices {
            let request = CacheRequest(id: ids[i], size: sizes[i], nextAccess: next[i])
            let wasResident = resident[ids[i]] != nil
            let before = policy.residentCount
            evicted.removeAll()
            let hit = policy.access(request)
            #expect(hit == wasResident, "\(kind) request \(i): hit \(hit), model says \(wasResident)")
            for e in evicted {
                #expect(resident.removeValue(forKey: e) != nil, "\(kind) evicted \(e), which was not resident")
            }
            if !hit && policy.residentCount == before - evicted.count + 1 { resident[ids[i]] = sizes[i] }
            #expect(policy.residentCount == resident.count, "\(kind) request \(i): resident count")
            #expect(policy.occupied == resident.values.reduce(0, +), "\(kind) request \(i): occupied")
            #expect(policy.occupied <= capacity)
            if policy.residentCount != resident.count { return }
        }
        // remove() drops a resident object without reporting it.
        if let (id, _) = resident.first {
            evicted.removeAll()
            #expect(policy.remove(id))
            #expect(evicted.isEmpty)
            #expect(!policy.lookup(CacheRequest(id: id, size: 1)))
        }
    }

    func misses(_ kind: PolicyKind, capacity: Int64, _ ids: [UInt64]) -> [Bool] {
        let p = kind.make(capacity: capacity)
        return ids.map { !p.access(CacheRequest(id: $0)) }
    }

    @Test("LRU, FIFO, CLOCK and SIEVE on hand-checked sequences")
    func sequences() {
        // a b a c b: LRU evicts b at c (a was used); FIFO evicts a.
        #expect(misses(.lru, capacity: 2, [1, 2, 1, 3, 2]) == [true, true, false, true, true])
        #expect(misses(.lru, capacity: 2, [1, 2, 1, 3, 1]) == [true, true, false, true, false])
        #expect(misses(.fifo, capacity: 2, [1, 2, 1, 3, 1]) == [true, true, false, true, true])
        // CLOCK: 1 hit sets its bit; at 3 the oldest (1) gets a second chance, 2 is evicted.
        #expect(misses(.clock, capacity: 2, [1, 2, 1, 3, 1, 2]) == [true, true, false, true, false, true])
        // SIEVE: 1 and 3 visited; inserting 5 clears 1, evicts 2; inserting 6 evicts 4 (the hand moved on).
        #expect(
            misses(.sieve, capacity: 4, [1, 2, 3, 4, 1, 3, 5, 2, 6, 1])
                == [true, true, true, true, false, false, true, true, true, false])
    }

    @Test("registry: names, parameters and clear errors")
    func registry() throws {
        for kind in PolicyKind.allCases {
            #expect(try PolicyKind.parse(kind.rawValue).0 == kind)
        }
        let (kind, parameters) = try PolicyKind.parse("s3fifo:small=0.2:threshold=1")
        #expect(kind == .s3fifo && parameters == ["small": 0.2, "threshold": 1])
        let custom = kind.make(capacity: 100, parameters: parameters) as? S3FIFO
        #expect(custom?.smallRatio == 0.2 && custom?.moveToMainThreshold == 1)
        #expect(throws: Error.self) { try PolicyKind.parse("nope") }
        #expect(throws: Error.self) { try PolicyKind.parse("lru:x=1") }
        #expect(throws: Error.self) { try PolicyKind.parse("s3fifo:small") }
    }

    @Test("the stream-aware policy beats every generic policy on the stream-reader workload")
    func streamAdvantage() async throws { try await onOwnThread { Self.streamAdvantage() } }

    /// ``streamAdvantage()``'s replays (seconds of CPU: off the cooperative pool).
    static func streamAdvantage() {
        var w = StreamWorkload()
        w.requests = 300_000
        let trace = TraceGenerator.stream(w)
        let wss = Int64(trace.workingSet().objects)
        for fraction in [0.02, 0.1] {
            let capacity = Int64(Double(wss) * fraction)
            func run(_ k: PolicyKind) -> Int {
                Simulator.run(trace, policy: k.make(capacity: capacity), mode: .objects).misses
            }
            let stream = run(.stream)
            let best = StreamGrid.generic.map { ($0, run($0)) }.min { $0.1 < $1.1 }!
            #expect(stream < best.1, "at \(fraction) of the working set: stream \(stream), best \(best.0) \(best.1)")
        }
    }

    @Test(
        "trailing tail readers read at most 1 + max lag blocks behind the head; a zero share leaves the trace as it was"
    )
    func trailingReaders() {
        var w = StreamWorkload()
        w.requests = 50_000
        w.segments = 4
        w.catchUpReaders = 1
        w.catchUpSpeed = 0.0001
        w.catchUpDepth = 0...1
        let plain = TraceGenerator.stream(w)
        w.laggingShare = 0
        #expect(TraceGenerator.stream(w).ids == plain.ids, "a zero share must not change the trace")
        w.laggingShare = 1
        w.maxLag = 8
        let trailing = TraceGenerator.stream(w)
        // The highest block seen so far in each segment is its head (or the head is ahead of it).
        var head: [UInt32: UInt64] = [:]
        var deepest: UInt64 = 0
        for id in trailing.ids {
            let k = BlockKey(rawValue: id)
            head[k.segment] = max(head[k.segment] ?? 0, k.block)
            deepest = max(deepest, head[k.segment]! - k.block)
        }
        #expect(deepest > 1, "nobody trails")
        // A read's lag is at most 1 + max lag behind the true head, and the highest block read is at most that.
        #expect(deepest <= 9, "readers trail deeper than 1 + max lag: \(deepest)")
    }

    @Test("the stream policy keeps its lead at 10 % of the blocks on grid workloads it was not tuned on")
    func streamGrid() async throws { try await onOwnThread { Self.streamGrid() } }

    /// ``streamGrid()``'s replays (seconds of CPU: off the cooperative pool).
    static func streamGrid() {
        let points = StreamGrid.points(requests: 200_000).filter {
            $0.name.hasPrefix("30 %") || $0.name == "1000 segments" || $0.name.hasPrefix("200 catch-up")
        }
        #expect(points.count == 3)
        for p in points {
            let row = StreamGrid.run(p, fractions: [0.1])
            let cell = row.cells[0]
            #expect(cell.lead > 0, "\(p.name): stream \(cell.stream), \(cell.best.policy) \(cell.best.missRatio)")
        }
    }
}
