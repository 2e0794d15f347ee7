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
