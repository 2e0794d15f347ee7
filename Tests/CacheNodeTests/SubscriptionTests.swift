import CacheNode
import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import Testing
import WireProtocol

@testable import StreamModel

@Suite("subscriptions", .serialized)
struct SubscriptionTests {
    static let name = try! StreamName(parsing: "node/subscribed")

    /// Polls a node's stats until `done` holds (at most 5 s); returns the last stats.
    static func statsWhen(_ c: StoreClient, _ done: ([String: Any]) -> Bool) async throws -> [String: Any] {
        var s: [String: Any] = [:]
        for _ in 0..<250 {
            s = try await ParkedReadTests.stats(c)
            if done(s) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return s
    }

    @Test(
        "a subscription on the owner and on another node gets every appended byte pushed, heartbeats, and ends with the sealed segment"
    )
    func pushesUntilSealed() async throws {
        let ring = try await NodeRing(count: 2)
        let setup = try await ring.client(0)
        try await setup.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        let addresses = ring.addresses
        let subscribers = (0..<2).map { i in
            Task { () throws -> (chunks: [SegmentChunk], data: [UInt8]) in
                let c = try await StoreClient.connect(to: addresses[i])
                var chunks: [SegmentChunk] = []
                var data: [UInt8] = []
                // 1 s heartbeats: the client gives up after 2 heartbeats and a second of silence, and this test
                // shares two cores with the whole suite (at 500 ms a busy run saw 2 s of silence).
                for try await chunk in c.subscribe(segment, from: 0, heartbeat: .seconds(1)) {
                    chunks.append(chunk)
                    data += chunk.data.readableBytesView
                }
                await c.close()
                return (chunks, data)
            }
        }
        for i in 0..<2 {
            let s = try await Self.statsWhen(try await ring.client(i)) { $0["subscriptions"] as? Int == 1 }
            #expect(s["subscriptions"] as? Int == 1, "node \(i): \(s)")
        }
        // Nothing to push for a while: heartbeats (empty chunks) come meanwhile.
        try await Task.sleep(for: .milliseconds(2500))
        var appended: [UInt8] = []
        for n in 0..<5 {
            let batch = try frames(["event \(n)", String(repeating: "x", count: 100 * n)])
            appended += batch.readableBytesView
            _ = try await setup.append(segment, frames: batch, writerID: "w", firstEventNumber: Int64(2 * n))
            try await Task.sleep(for: .milliseconds(30))
        }
        try await setup.seal(segment)
        for (i, s) in subscribers.enumerated() {
            let (chunks, data) = try await s.value
            #expect(data == appended, "node \(i)")
            #expect(chunks.prefix { $0.data.readableBytes == 0 }.count >= 1, "node \(i): no heartbeat before the data")
            // Offsets follow one another.
            var next: UInt64 = 0
            for c in chunks {
                #expect(c.offset == next)
                next += UInt64(c.data.readableBytes)
            }
            #expect(chunks.last?.info.sealed == true)
        }
        for i in 0..<2 {
            let s = try await Self.statsWhen(try await ring.client(i)) { $0["subscriptions"] as? Int == 0 }
            #expect(s["subscriptions"] as? Int == 0, "node \(i) keeps a subscription after the sealed end: \(s)")
        }
        await setup.close()
        await ring.shutdown()
    }

    /// A one-node ring, a client of it, and the segment of a new one-segment stream.
    static func oneNodeSegment() async throws -> (NodeRing, StoreClient, SegmentID) {
        let ring = try await NodeRing(count: 1)
        let setup = try await ring.client(0)
        try await setup.createStream(Self.name, segments: 1)
        return (ring, setup, SegmentID(stream: Self.name, number: 0))
    }

    @Test("subscribers at the tail of an owned segment get pushes straight from the tail, every byte in order")
    func tailPushes() async throws {
        let (ring, setup, segment) = try await Self.oneNodeSegment()
        let appends = 20
        let address = ring.addresses[0]
        let subscribers = (0..<3).map { _ in
            Task { () throws -> [SegmentChunk] in
                let c = try await StoreClient.connect(to: address)
                var chunks: [SegmentChunk] = []
                for try await chunk in c.subscribe(segment, from: 0, heartbeat: .seconds(1)) {
                    chunks.append(chunk)
                }
                await c.close()
                return chunks
            }
        }
        _ = try await Self.statsWhen(setup) { $0["subscriptions"] as? Int == 3 }
        var appended: [UInt8] = []
        for n in 0..<appends {
            let batch = try frames(["pushed \(n)"])
            appended += batch.readableBytesView
            _ = try await setup.append(segment, frames: batch, writerID: "w", firstEventNumber: Int64(n))
            try await Task.sleep(for: .milliseconds(15))
        }
        try await setup.seal(segment)
        for s in subscribers {
            let chunks = try await s.value
            var next: UInt64 = 0
            var data: [UInt8] = []
            for c in chunks {
                #expect(c.offset == next)
                next += UInt64(c.data.readableBytes)
                data += c.data.readableBytesView
            }
            #expect(data == appended)
        }
        // Each subscriber waits at the end between appends: (nearly) every delivery is a push from the tail.
        let pushes = try await ParkedReadTests.stats(setup)["tail_pushes"] as? Int ?? 0
        #expect(pushes >= 3 * (appends - 2), "tail pushes \(pushes) for \(appends) appends to 3 subscribers")
        await setup.close()
        await ring.shutdown()
    }

    @Test("the window bounds what a subscriber that does not consume is sent; consuming gives it back")
    func windowIsFlowControl() async throws {
        let (ring, setup, segment) = try await Self.oneNodeSegment()
        let one = try frames([String(repeating: "e", count: 1000)])
        let size = one.readableBytes
        let subscriber = try await ring.client(0)
        let before = try await ParkedReadTests.stats(setup)["bytes_served"] as? Int ?? 0
        // A window of 2.5 events: the node sends two events and half of the third, then stops.
        let subscription = subscriber.subscribe(segment, from: 0, window: size * 5 / 2, heartbeat: .seconds(5))
        _ = try await Self.statsWhen(setup) { $0["subscriptions"] as? Int == 1 }
        for n in 0..<10 {
            _ = try await setup.append(segment, frames: one, writerID: "w", firstEventNumber: Int64(n))
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(300))
        let sent = (try await ParkedReadTests.stats(setup)["bytes_served"] as? Int ?? 0) - before
        #expect(sent == size * 5 / 2, "sent \(sent) bytes to a subscriber with a window of \(size * 5 / 2)")
        // Consuming opens the window again: all ten events arrive.
        var got = 0
        for try await chunk in subscription {
            got += chunk.data.readableBytes
            if got >= 10 * size { break }
        }
        #expect(got == 10 * size)
        subscription.cancel()
        let s = try await Self.statsWhen(setup) { $0["subscriptions"] as? Int == 0 }
        #expect(s["subscriptions"] as? Int == 0, "cancel left the subscription open: \(s)")
        await subscriber.close()
        await setup.close()
        await ring.shutdown()
    }

    @Test("a store has no subscriptions: a typed error, and follow() polls it instead")
    func storeFallsBackToPolling() async throws {
        let harness = try await Harness()
        let c = try await StoreClient.connect(to: harness.address)
        try await c.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        await #expect(throws: EddyError.self) {
            for try await _ in c.subscribe(segment, from: 0) {}
        }
        let batch = try frames(["a", "b", "c"])
        _ = try await c.append(segment, frames: batch, writerID: "w", firstEventNumber: 0)
        try await c.seal(segment)
        let client = try await EddyClient.connect(.init(servers: [harness.address]))
        var events: [String] = []
        _ = try await client.follow(SegmentCursor(segment: segment, offset: 0), heartbeat: .milliseconds(200)) {
            _, batch in
            events += batch.map { String(decoding: $0.event.payload, as: UTF8.self) }
            return true
        }
        #expect(events == ["a", "b", "c"])
        await client.close()
        await c.close()
        await harness.shutdown()
    }
}
