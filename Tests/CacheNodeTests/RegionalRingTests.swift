import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Testing
import WireProtocol
import WriteBack

@testable import CacheNode

/// A regional ring (`--upstream-ring`) in one process beside its home ring: its owners read through the home
/// ring's nodes as owners read a store, so however many regional readers, each byte is read from the home ring
/// once; creates and appends sent to it reach the home ring's store; a dead home node is failed over.
@Suite("regional ring", .serialized)
struct RegionalRingTests {
    static func stats(_ node: CacheNode) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(node.core.statsJSON().utf8)) as? [String: Any])
    }

    /// Every event of `segment` from its start to `length`, read through `client`.
    static func readAll(_ client: EddyClient, _ segment: SegmentID, to length: UInt64) async throws -> [String] {
        var cursor = SegmentCursor(segment: segment, offset: 0)
        var got: [String] = []
        while cursor.pendingOffset < length {
            let (_, events) = try await cursor.step(client, wait: .milliseconds(200))
            got += events.map { String(decoding: $0.event.payload, as: UTF8.self) }
        }
        return got
    }

    @Test(
        "50 readers through a regional ring cost the home ring one read of each byte; creates and appends are forwarded to it; a dead home node is failed over"
    )
    func readsThroughTheHomeRing() async throws {
        let home = try await NodeRing(count: 2)
        let addresses = try (0..<2).map { _ in ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort()) }
        var regional: [CacheNode] = []
        for a in addresses {
            var c = NodeConfiguration(listen: a, store: home.harness.address, members: addresses)
            c.upstreamRing = home.addresses
            c.blockSize = 64 << 10
            c.cacheBytes = 64 << 20
            c.whatIf = false
            c.logger.logLevel = .warning
            regional.append(try await CacheNode.start(configuration: c))
        }
        let client = try await EddyClient.connect(.init(servers: addresses))
        do {
            // Created through the regional ring: the stream is the home store's.
            let name = try StreamName(parsing: "geo/events")
            try await client.createStream(name, segments: 2)
            let store = try await home.harness.client()
            #expect(try await store.info(name).segments.count == 2)
            // Appended at home (straight to the store): the regional owners have to read every byte upstream.
            for s in 0..<2 {
                let segment = SegmentID(stream: name, number: UInt32(s))
                for round in 0..<4 {
                    _ = try await store.append(
                        segment,
                        frames: try frames(
                            (0..<100).map { "s\(s)-\(round * 100 + $0)-" + String(repeating: "g", count: 300) }))
                }
            }
            let info = try await store.info(name)
            let total = info.segments.reduce(UInt64(0)) { $0 + $1.length }

            // 50 regional readers, 25 per segment, all at once.
            let results = try await withThrowingTaskGroup(of: (Int, [String]).self) { group in
                for r in 0..<50 {
                    group.addTask {
                        let reader = try await EddyClient.connect(.init(servers: addresses))
                        defer { Task { await reader.close() } }
                        let segment = info.segments[r % 2]
                        return (r, try await Self.readAll(reader, segment.segment, to: segment.length))
                    }
                }
                var all: [(Int, [String])] = []
                for try await result in group { all.append(result) }
                return all
            }
            for (r, got) in results {
                #expect(
                    got == (0..<400).map { "s\(r % 2)-\($0)-" + String(repeating: "g", count: 300) }, "reader \(r)")
            }
            // What the regional ring read upstream: each byte once, for 50 readers.
            let upstream = try regional.map { try Self.stats($0)["upstream_read_bytes"] as? Int ?? -1 }
            #expect(upstream.reduce(0, +) == Int(total), "upstream reads \(upstream) for \(total) bytes")
            // And the home ring read each byte from its store once (its owners' own count).
            let storeReads = try home.nodes.map { try Self.stats($0)["store_read_bytes"] as? Int ?? -1 }
            #expect(storeReads.reduce(0, +) == Int(total), "the home ring read \(storeReads) for \(total) bytes")
            #expect(try Self.stats(regional[0])["upstream_ring"] as? [String] == home.addresses.map(\.description))

            // An exactly-once append sent to the regional ring lands in the home store, once, retry or not.
            let segment = SegmentID(stream: name, number: 0)
            let batch = try frames(["from-the-region"])
            _ = try await client.append(segment, frames: batch, writerID: "geo-writer", firstEventNumber: 0)
            _ = try await client.append(segment, frames: batch, writerID: "geo-writer", firstEventNumber: 0)
            let after = try await store.info(segment)
            #expect(after.length == info.segments[0].length + UInt64(batch.readableBytes))

            // The home node the regional ring was reading through goes away: its owners fail over to the other.
            await home.nodes[0].close()
            let later = try StreamName(parsing: "geo/later")
            try await store.createStream(later, segments: 1)
            let laterSegment = SegmentID(stream: later, number: 0)
            _ = try await store.append(laterSegment, frames: try frames((0..<50).map { "late-\($0)" }))
            let length = try await store.info(laterSegment).length
            #expect(try await Self.readAll(client, laterSegment, to: length) == (0..<50).map { "late-\($0)" })
            let failovers = try regional.map { try Self.stats($0)["upstream_failovers"] as? Int ?? 0 }
            #expect(failovers.reduce(0, +) >= 1, "failovers \(failovers)")
            await store.close()
        } catch {
            await client.close()
            for n in regional { await n.close() }
            await home.shutdown()
            throw error
        }
        await client.close()
        for n in regional { await n.close() }
        await home.shutdown()
    }

    /// A regional ring of `count` nodes reading through `home`'s nodes (preferring `zone`'s).
    static func regionalRing(_ home: NodeRing, count: Int, zone: String? = nil) async throws -> (
        nodes: [CacheNode], addresses: [ServerAddress]
    ) {
        let addresses = try (0..<count).map { _ in ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort()) }
        var nodes: [CacheNode] = []
        for a in addresses {
            var c = NodeConfiguration(listen: a, store: home.harness.address, members: addresses)
            c.upstreamRing = home.addresses
            c.upstreamZone = zone
            c.blockSize = 64 << 10
            c.cacheBytes = 64 << 20
            c.whatIf = false
            c.logger.logLevel = .warning
            nodes.append(try await CacheNode.start(configuration: c))
        }
        return (nodes, addresses)
    }

    /// Follows `segment` from its start through `client` until `count` events came (tail reads that wait).
    static func follow(_ client: EddyClient, _ segment: SegmentID, count: Int, seen: Counter? = nil) async throws
        -> [String]
    {
        var cursor = SegmentCursor(segment: segment, offset: 0)
        var got: [String] = []
        while got.count < count {
            let (_, events) = try await cursor.step(client, wait: .seconds(2))
            got += events.map { String(decoding: $0.event.payload, as: UTF8.self) }
            seen?.add(events.count)
        }
        return got
    }

    static func sum(_ nodes: [CacheNode], _ key: String) throws -> Int {
        try nodes.map { try stats($0)[key] as? Int ?? -1 }.reduce(0, +)
    }

    @Test(
        "a regional ring follows each tail with one subscription per segment at the home ring, whatever the number of tail readers"
    )
    func tailsBySubscription() async throws {
        let home = try await NodeRing(count: 2)
        let regional = try await Self.regionalRing(home, count: 2)
        let store = try await home.harness.client()
        let name = try StreamName(parsing: "geo/tails")
        try await store.createStream(name, segments: 4)
        let segments = (0..<4).map { SegmentID(stream: name, number: UInt32($0)) }
        let rounds = 40
        let expected = segments.map { s in (0..<rounds).map { "\(s.number)-\($0)" } }
        let seen = Counter()
        do {
            // 20 tail readers, 5 per segment, waiting at the start before anything is appended.
            let readers = Task {
                try await withThrowingTaskGroup(of: (Int, [String]).self) { group in
                    for r in 0..<20 {
                        group.addTask {
                            let reader = try await EddyClient.connect(.init(servers: regional.addresses))
                            defer { Task { await reader.close() } }
                            return (
                                r, try await Self.follow(reader, segments[r % 4], count: rounds, seen: seen)
                            )
                        }
                    }
                    var all: [(Int, [String])] = []
                    for try await result in group { all.append(result) }
                    return all
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            // Appended at home, one event per segment per round: each delivery has to come from upstream.
            for round in 0..<rounds {
                for s in segments {
                    _ = try await store.append(s, frames: try frames(["\(s.number)-\(round)"]))
                }
                if round == rounds / 2 {
                    // Half way (every reader has had the first half): one subscription per segment, no more.
                    let deadline = ContinuousClock.now + .seconds(30)
                    while seen.value < 20 * (round + 1), ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    #expect(try Self.sum(regional.nodes, "upstream_subscriptions") == 4)
                    #expect(try Self.sum(home.nodes, "subscriptions") == 4, "the home ring's subscriptions")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            for (r, got) in try await readers.value { #expect(got == expected[r % 4], "reader \(r)") }
            // Deliveries were pushed: the regional ring sent the home ring a few reads (each owner's first look
            // at a segment), not one or two per delivery.
            let requests = try Self.sum(regional.nodes, "store_read_requests")
            #expect(requests < rounds, "\(requests) upstream reads for \(rounds * 4) deliveries")
            #expect(try Self.sum(regional.nodes, "upstream_pushes") >= rounds)
            let total = try await store.info(name).segments.reduce(UInt64(0)) { $0 + $1.length }
            #expect(try Self.sum(regional.nodes, "upstream_read_bytes") == Int(total))
            // No reader waits any more: the subscriptions end after a heartbeat interval.
            let deadline = ContinuousClock.now + .seconds(30)
            while try Self.sum(home.nodes, "subscriptions") > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(try Self.sum(home.nodes, "subscriptions") == 0)
            #expect(try Self.sum(regional.nodes, "upstream_subscriptions") == 0)
        } catch {
            await store.close()
            for n in regional.nodes { await n.close() }
            await home.shutdown()
            throw error
        }
        await store.close()
        for n in regional.nodes { await n.close() }
        await home.shutdown()
    }

    @Test(
        "a regional ring that failed over out of its --upstream-zone moves back once a node of that zone answers, its tail subscription with it"
    )
    func backToTheZone() async throws {
        var zones = ["a", "b"].makeIterator()
        var homeConfigurations: [NodeConfiguration] = []
        let home = try await NodeRing(count: 2) { c in
            c.zone = zones.next()!
            homeConfigurations.append(c)
        }
        let regional = try await Self.regionalRing(home, count: 1, zone: "a")
        let store = try await home.harness.client()
        let name = try StreamName(parsing: "geo/zone")
        try await store.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        var restarted: CacheNode?
        do {
            let client = try await EddyClient.connect(.init(servers: regional.addresses))
            defer { Task { await client.close() } }
            _ = try await store.append(segment, frames: try frames(["e-0"]))
            #expect(try await Self.follow(client, segment, count: 1) == ["e-0"])
            #expect(try Self.stats(regional.nodes[0])["upstream"] as? String == home.addresses[0].description)

            // Zone a's node goes: the regional node fails over to zone b's.
            await home.nodes[0].close()
            _ = try await store.append(segment, frames: try frames(["e-1"]))
            // A tail reader follows throughout; it waits for one event more than the test appends at first.
            let follower = Task { try await Self.follow(client, segment, count: 41) }
            var deadline = ContinuousClock.now + .seconds(30)
            while try Self.stats(regional.nodes[0])["upstream"] as? String != home.addresses[1].description,
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try Self.stats(regional.nodes[0])["upstream"] as? String == home.addresses[1].description)

            // Zone a's node is back at its address: the regional node returns to it, the tail with it.
            let back = try await CacheNode.start(configuration: homeConfigurations[0])
            restarted = back
            deadline = ContinuousClock.now + .seconds(40)
            var round = 2
            while try Self.stats(regional.nodes[0])["upstream"] as? String != home.addresses[0].description,
                ContinuousClock.now < deadline
            {
                if round < 38 {
                    _ = try await store.append(segment, frames: try frames(["e-\(round)"]))
                    round += 1
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            let regionalStats = try Self.stats(regional.nodes[0])
            #expect(regionalStats["upstream"] as? String == home.addresses[0].description)
            #expect(regionalStats["upstream_zone_returns"] as? Int == 1)
            for r in round..<40 { _ = try await store.append(segment, frames: try frames(["e-\(r)"])) }
            // The tail's subscription moved with it: zone a's node serves it, zone b's no longer does.
            deadline = ContinuousClock.now + .seconds(30)
            while try Self.stats(back)["subscriptions"] as? Int != 1
                || Self.stats(home.nodes[1])["subscriptions"] as? Int != 0, ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(try Self.stats(back)["subscriptions"] as? Int == 1)
            #expect(try Self.stats(home.nodes[1])["subscriptions"] as? Int == 0)
            _ = try await store.append(segment, frames: try frames(["e-40"]))
            #expect(try await follower.value == (0..<41).map { "e-\($0)" })
        } catch {
            await store.close()
            for n in regional.nodes { await n.close() }
            await restarted?.close()
            await home.shutdown()
            throw error
        }
        await store.close()
        for n in regional.nodes { await n.close() }
        await restarted?.close()
        await home.shutdown()
    }

    @Test("a regional ring is refused with write-back, or with its own members as upstream")
    func badSettings() throws {
        let me = try ServerAddress(parsing: "127.0.0.1:7001")
        var c = NodeConfiguration(listen: me, store: try ServerAddress(parsing: "127.0.0.1:7000"), members: [me])
        c.upstreamRing = [me]
        #expect(throws: EddyError.self) { try c.validate() }
        c.upstreamRing = [try ServerAddress(parsing: "127.0.0.1:8001")]
        try c.validate()
        c.writeBack = WriteBackConfiguration(objectStore: try FileObjectStore(root: NSTemporaryDirectory() + "x"))
        #expect(throws: EddyError.self) { try c.validate() }
    }
}
