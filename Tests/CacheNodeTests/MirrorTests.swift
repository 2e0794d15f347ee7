import EddyClient
import EddyTestSupport
import Foundation
import Mirror
import NIOCore
import StoreClient
import StreamModel
import Testing
import WireProtocol

@testable import CacheNode

/// `eddy mirror`'s core in one process between two rings (each two nodes and a store): identical pointers,
/// seals, truncations, deletions, re-creations, restarts without loss or duplicates, refused foreign writes, lag.
@Suite("mirror", .serialized)
struct MirrorTests {
    /// Every event of every segment of `name` with its pointer, read through `client` (a segment from its start).
    static func contents(_ client: EddyClient, _ name: StreamName) async throws -> [String] {
        let info = try await client.info(name)
        var out: [String] = []
        for s in info.segments {
            var cursor = SegmentCursor(segment: s.segment, offset: s.startOffset)
            while cursor.pendingOffset < s.length {
                let (_, events) = try await cursor.step(client, wait: .zero)
                out += events.map {
                    "\($0.pointer) \($0.event.routingKey ?? "-") \($0.event.timestamp) "
                        + String(decoding: $0.event.payload, as: UTF8.self)
                }
            }
        }
        return out
    }

    /// Waits until `condition` holds (polled every 50 ms), at most `limit`.
    static func eventually(_ limit: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws
        -> Bool
    {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// Whether the target stream is the source stream: same segments (start, length, sealed) and the same events
    /// at the same pointers.
    static func identical(_ a: EddyClient, _ b: EddyClient, _ name: StreamName) async throws -> Bool {
        let x = try await a.info(name)
        let y = try await b.info(name)
        guard x.segments.count == y.segments.count else { return false }
        for (s, t) in zip(x.segments, y.segments)
        where s.length != t.length || s.startOffset != t.startOffset || s.sealed != t.sealed {
            return false
        }
        return try await contents(a, name) == contents(b, name)
    }

    static func append(_ client: EddyClient, _ name: StreamName, segment: UInt32, _ payloads: [String]) async throws {
        var out: [UInt8] = []
        for p in payloads {
            try EventFrame.encode(
                Event(
                    routingKey: "k\(segment)", timestamp: Int64(Date().timeIntervalSince1970 * 1e6),
                    payload: Array(p.utf8)),
                into: &out)
        }
        _ = try await client.append(SegmentID(stream: name, number: segment), frames: ByteBuffer(bytes: out))
    }

    static func mirror(_ a: NodeRing, _ b: NodeRing, pattern: String, checkpoint: String? = "ops/mirror")
        async throws -> (Mirror, Task<Void, Never>)
    {
        var c = MirrorConfiguration(
            source: .init(servers: a.addresses), target: .init(servers: b.addresses), pattern: pattern)
        c.checkpoint = try checkpoint.map { try StreamName(parsing: $0) }
        c.scanInterval = .milliseconds(200)
        c.logger.logLevel = .critical
        let m = try await Mirror.start(c)
        return (m, Task { await m.run() })
    }

    static func close(_ a: NodeRing, _ b: NodeRing, _ ca: EddyClient, _ cb: EddyClient) async {
        await ca.close()
        await cb.close()
        await a.shutdown()
        await b.shutdown()
    }

    static func stop(_ m: (Mirror, Task<Void, Never>)) async {
        m.1.cancel()
        await m.1.value
        await m.0.close()
    }

    @Test(
        "every event lands at the same pointer; seals, truncations, deletions and re-creations follow; other streams are left out"
    )
    func identicalPointers() async throws {
        let a = try await NodeRing(count: 2)
        let b = try await NodeRing(count: 2)
        let ca = try await EddyClient.connect(.init(servers: a.addresses))
        let cb = try await EddyClient.connect(.init(servers: b.addresses))
        let m = try await Self.mirror(a, b, pattern: "geo/*")
        do {
            let orders = try StreamName(parsing: "geo/orders")
            let audit = try StreamName(parsing: "geo/audit")
            let other = try StreamName(parsing: "local/only")
            try await ca.createStream(orders, segments: 3)
            try await ca.createStream(audit, segments: 1)
            try await ca.createStream(other, segments: 1)
            // Batches of uneven sizes on every segment while the mirror copies.
            for round in 0..<20 {
                for s in UInt32(0)..<3 {
                    try await Self.append(
                        ca, orders, segment: s,
                        (0..<(1 + round % 5)).map { "o\(s)-\(round)-\($0)" + String(repeating: "x", count: round * 7) })
                }
                try await Self.append(ca, audit, segment: 0, ["a\(round)"])
                try await Self.append(ca, other, segment: 0, ["l\(round)"])
            }
            #expect(try await Self.eventually { try await Self.identical(ca, cb, orders) })
            #expect(try await Self.eventually { try await Self.identical(ca, cb, audit) })
            let names = try await cb.listStreams().map(\.name.description)
            #expect(!names.contains("local/only"), "\(names)")
            #expect(names.contains("ops/mirror"), "the checkpoint stream is in the target: \(names)")

            // A pointer read at the source is the same event at the target.
            let info = try await ca.info(orders)
            let segment = info.segments[1]
            let (_, near) = try await cb.read(segment.segment, from: 0, maxBytes: 1 << 20)
            let (_, far) = try await ca.read(segment.segment, from: 0, maxBytes: 1 << 20)
            #expect(near.readableBytes > 0 && Array(near.readableBytesView) == Array(far.readableBytesView))

            // Seal and truncate at the source: the target follows.
            _ = try await ca.seal(info.segments[0].segment)
            let sizes = try await {
                let (_, data) = try await ca.read(info.segments[2].segment, from: 0, maxBytes: 1 << 20)
                return try data.withUnsafeReadableBytes { try EventFrame.frameSizes($0) }
            }()
            let cut = UInt64(sizes.prefix(5).reduce(0, +))
            _ = try await ca.truncate(info.segments[2].segment, at: cut)
            #expect(
                try await Self.eventually {
                    let t = try await cb.info(orders)
                    return t.segments[0].sealed && t.segments[2].startOffset == cut
                })
            #expect(try await Self.identical(ca, cb, orders))
            // Events appended after a truncation still land at the same pointers.
            try await Self.append(ca, orders, segment: 2, ["after-the-cut"])
            #expect(try await Self.eventually { try await Self.identical(ca, cb, orders) })

            // Deleted at the source: deleted at the target. Created again (other segment count): again.
            try await ca.deleteStream(audit)
            #expect(try await Self.eventually { !(try await cb.listStreams().map(\.name).contains(audit)) })
            try await ca.createStream(audit, segments: 2)
            try await Self.append(ca, audit, segment: 1, ["second life"])
            #expect(try await Self.eventually { try await Self.identical(ca, cb, audit) })
            #expect(try await cb.info(audit).segments.count == 2)

            let status = m.0.status()
            #expect(status.streams.map(\.stream) == ["geo/audit", "geo/orders"])
            #expect(status.streams.allSatisfy { $0.lagBytes == 0 && $0.lagSeconds == 0 }, "\(status)")
            #expect(status.streams.first { $0.stream == "geo/orders" }?.segments.first?.state == "sealed")
            let samples = m.0.metrics()
            #expect(samples.contains { $0.name == "eddy_mirror_lag_bytes" && $0.labels.first?.1 == "geo/orders" })
        } catch {
            Issue.record(error)
        }
        await Self.stop(m)
        await Self.close(a, b, ca, cb)
    }

    @Test("a mirror stopped and started again many times while events are appended copies each exactly once")
    func restarts() async throws {
        let a = try await NodeRing(count: 2)
        let b = try await NodeRing(count: 2)
        let ca = try await EddyClient.connect(.init(servers: a.addresses))
        let cb = try await EddyClient.connect(.init(servers: b.addresses))
        let name = try StreamName(parsing: "geo/restarts")
        try await ca.createStream(name, segments: 2)
        let writer = Task {
            for i in 0..<400 {
                try await Self.append(ca, name, segment: UInt32(i % 2), ["e\(i)", "f\(i)"])
            }
        }
        for _ in 0..<5 {
            let m = try await Self.mirror(a, b, pattern: "geo/*")
            try await Task.sleep(for: .milliseconds(Int.random(in: 100...400)))
            await Self.stop(m)
        }
        try await writer.value
        let m = try await Self.mirror(a, b, pattern: "geo/*")
        #expect(try await Self.eventually { try await Self.identical(ca, cb, name) })
        let events = try await Self.contents(cb, name)
        #expect(events.count == 800)
        #expect(Set(events).count == 800)
        await Self.stop(m)
        await Self.close(a, b, ca, cb)
    }

    @Test(
        "a target segment something else wrote to is refused, naming it; the stream's other segments are mirrored; a source truncated before the mirror started is padded"
    )
    func foreignWrites() async throws {
        let a = try await NodeRing(count: 2)
        let b = try await NodeRing(count: 2)
        let ca = try await EddyClient.connect(.init(servers: a.addresses))
        let cb = try await EddyClient.connect(.init(servers: b.addresses))
        let name = try StreamName(parsing: "geo/shared")
        let old = try StreamName(parsing: "geo/old")
        try await ca.createStream(name, segments: 3)
        try await cb.createStream(name, segments: 3)
        try await ca.createStream(old, segments: 1)
        for s in UInt32(0)..<3 { try await Self.append(ca, name, segment: s, ["source-\(s)-a", "source-\(s)-b"]) }
        try await Self.append(cb, name, segment: 0, ["written at the target"])
        // A source truncated before the mirror ever saw it.
        for i in 0..<10 { try await Self.append(ca, old, segment: 0, ["old-\(i)"]) }
        let oldSegment = SegmentID(stream: old, number: 0)
        let (_, data) = try await ca.read(oldSegment, from: 0, maxBytes: 1 << 20)
        let sizes = try data.withUnsafeReadableBytes { try EventFrame.frameSizes($0) }
        let cut = UInt64(sizes.prefix(6).reduce(0, +))
        _ = try await ca.truncate(oldSegment, at: cut)

        let m = try await Self.mirror(a, b, pattern: "geo/*", checkpoint: nil)
        do {
            #expect(
                try await Self.eventually {
                    m.0.status().streams.first { $0.stream == "geo/shared" }?.segments.first?.state == "refused"
                })
            let shared = try #require(m.0.status().streams.first { $0.stream == "geo/shared" })
            #expect(shared.segments[0].error?.contains("geo/shared/00000000") == true, "\(shared)")
            #expect(
                try await Self.eventually {
                    let t = try await cb.info(name)
                    let s = try await ca.info(name)
                    return t.segments[1].length == s.segments[1].length && t.segments[2].length == s.segments[2].length
                })
            // The refused segment keeps what was written there; the mirror does not touch it.
            let refused = try await Self.contents(cb, name).filter { $0.hasPrefix("geo/shared/00000000/") }
            #expect(refused.count == 1 && refused[0].hasSuffix("written at the target"), "\(refused)")
            // A write at the target after the mirror took a segment up: the next copied batch finds it.
            try await Self.append(cb, name, segment: 1, ["a second writer"])
            try await Self.append(ca, name, segment: 1, ["source-1-c"])
            #expect(
                try await Self.eventually {
                    m.0.status().streams.first { $0.stream == "geo/shared" }?.segments[1].state == "refused"
                })
            #expect(m.0.status().streams.first { $0.stream == "geo/shared" }?.segments[2].state == "copying")
            #expect(
                m.0.metrics().contains {
                    $0.name == "eddy_mirror_refused_segments" && $0.labels.first?.1 == "geo/shared" && $0.value == 2
                })
            // Padded below the truncation point, truncated there: the events left have the same pointers.
            #expect(try await Self.eventually { try await Self.identical(ca, cb, old) })
            #expect(try await cb.info(oldSegment).startOffset == cut)
        } catch {
            Issue.record(error)
        }
        await Self.stop(m)
        await Self.close(a, b, ca, cb)
    }

    @Test("while the target cannot be reached the lag grows in bytes and seconds; once it can, it goes back to 0")
    func lag() async throws {
        let a = try await NodeRing(count: 1)
        let b = try await NodeRing(count: 1)
        let relay = try await FaultRelay.start(to: b.addresses[0])
        let ca = try await EddyClient.connect(.init(servers: a.addresses))
        let cb = try await EddyClient.connect(.init(servers: b.addresses))
        let name = try StreamName(parsing: "geo/lag")
        try await ca.createStream(name, segments: 1)
        var c = MirrorConfiguration(
            source: .init(servers: a.addresses), target: .init(servers: [relay.address]), pattern: "geo/lag")
        c.scanInterval = .milliseconds(200)
        c.target.requestTimeout = .seconds(2)
        c.logger.logLevel = .critical
        let mirror = try await Mirror.start(c)
        let run = Task { await mirror.run() }
        try await Self.append(ca, name, segment: 0, ["one"])
        #expect(try await Self.eventually { try await Self.identical(ca, cb, name) })
        relay.cut()
        try await Self.append(ca, name, segment: 0, ["two", "three"])
        let length = try await ca.info(name).segments[0].length
        #expect(
            try await Self.eventually {
                let s = mirror.status().streams.first
                return (s?.lagBytes ?? 0) > 0 && (s?.lagSeconds ?? 0) >= 1
            })
        let behind = try #require(mirror.status().streams.first)
        #expect(behind.lagBytes <= length)
        relay.heal()
        #expect(try await Self.eventually { try await Self.identical(ca, cb, name) })
        #expect(try await Self.eventually { mirror.status().streams.first?.lagBytes == 0 })
        #expect(mirror.status().streams.first?.lagSeconds == 0)
        run.cancel()
        await run.value
        await mirror.close()
        await relay.close()
        await Self.close(a, b, ca, cb)
    }
}
