import Testing

@testable import HashRing

@Suite("HashRing")
struct HashRingTests {
    /// groupcache's test hash: a point or key name is read as a decimal number.
    static func predictable(replicas: Int) -> HashRing.Configuration {
        var c = HashRing.Configuration()
        c.virtualNodes = replicas
        c.hash = { UInt64($0) ?? 0 }
        return c
    }

    @Test("keys land on the first point clockwise; adding a member takes over its arcs (groupcache's table)")
    func table() {
        // Points: member 6 at 6, 16, 26; member 4 at 4, 14, 24; member 2 at 2, 12, 22.
        var ring = HashRing(members: ["6", "4", "2"], configuration: Self.predictable(replicas: 3))
        let cases: [(String, String)] = [("2", "2"), ("11", "2"), ("23", "4"), ("27", "2")]
        for (key, member) in cases { #expect(ring.candidate(for: key) == member, "key \(key)") }
        // 8 brings points 8, 18, 28: 27 now belongs to it.
        ring = ring.adding("8")
        #expect(ring.epoch == 2)
        for (key, member) in [("2", "2"), ("11", "2"), ("23", "4"), ("27", "8")] {
            #expect(ring.candidate(for: key) == member, "key \(key)")
        }
        #expect(HashRing(members: [String]()).candidate(for: "x") == nil)
    }

    @Test("epochs: a change of members gives the next epoch; no change keeps the ring; fingerprints follow members")
    func epochs() {
        let ring = HashRing(members: ["a:1", "b:1", "c:1"])
        #expect(ring.epoch == 1)
        #expect(ring.adding("b:1").epoch == 1)
        #expect(ring.removing("x:1").epoch == 1)
        let bigger = ring.adding("d:1")
        #expect(bigger.epoch == 2 && bigger.members == ["a:1", "b:1", "c:1", "d:1"])
        let back = bigger.removing("d:1")
        #expect(back.epoch == 3)
        #expect(back.fingerprint == ring.fingerprint, "same members, same fingerprint")
        #expect(bigger.fingerprint != ring.fingerprint)
    }

    static let segments = (0..<10_000).map { "scope/stream-\($0 / 100)/\(String(repeating: "0", count: 6))\($0 % 100)" }

    @Test("10,000 segments: a 4th member takes at most ~1/4, all to itself; removing one moves only its own")
    func movement() {
        let three = HashRing(members: ["10.0.0.1:9090", "10.0.0.2:9090", "10.0.0.3:9090"])
        let four = three.adding("10.0.0.4:9090")
        let before = three.assign(Self.segments)
        let after = four.assign(Self.segments)
        let moved = Self.segments.filter { before[$0] != after[$0] }
        #expect(Double(moved.count) <= 0.3 * Double(Self.segments.count), "moved \(moved.count)")
        #expect(moved.count > 1000, "the new member took a share")
        #expect(moved.allSatisfy { after[$0] == "10.0.0.4:9090" })

        let removed = four.removing("10.0.0.2:9090")
        let afterRemoval = removed.assign(Self.segments)
        let movedOnRemoval = Self.segments.filter { after[$0] != afterRemoval[$0] }
        #expect(movedOnRemoval.allSatisfy { after[$0] == "10.0.0.2:9090" })
        #expect(movedOnRemoval.count == Self.segments.filter { after[$0] == "10.0.0.2:9090" }.count)
        // With 128 points per member the loads are close to the mean: every member within 25 % of it.
        for (member, load) in after.loads { #expect(abs(Double(load) / 2500 - 1) < 0.25, "\(member): \(load)") }
    }

    @Test("bounded loads: no member owns more than ceil((1 + e) x mean), even with a badly skewed circle")
    func boundedLoads() {
        for (replicas, e) in [(1, 0.25), (2, 0.1), (128, 0.25), (4, 0.0)] {
            var c = HashRing.Configuration()
            c.virtualNodes = replicas
            c.loadFactor = e
            let ring = HashRing(members: (1...7).map { "node-\($0):9090" }, configuration: c)
            let plain = Dictionary(grouping: Self.segments) { ring.candidate(for: $0)! }.mapValues(\.count)
            let bounded = ring.assign(Self.segments)
            let cap = Int((Double(Self.segments.count) / 7 * (1 + e)).rounded(.up))
            #expect(bounded.capacity == cap)
            #expect(bounded.owners.count == Self.segments.count)
            #expect(bounded.loads.values.allSatisfy { $0 <= cap }, "replicas \(replicas): \(bounded.loads)")
            if replicas == 1 {
                #expect(plain.values.contains { $0 > cap }, "one point per member is skewed without the bound")
            }
            // The same keys on the same ring give the same answer, in any order.
            #expect(ring.assign(Self.segments.reversed()) == bounded)
        }
    }
}
