import EddyClient
import Foundation
import StreamModel
import Testing

@testable import Mirror

/// The mirror's backlog between a segment's follow and its appender: what came while an append was out goes in
/// the next one, whole; a full backlog holds the follow back; the appender's failure reaches the follow.
@Suite("mirror backlog")
struct MirrorBacklogTests {
    static let segment = SegmentID(stream: try! StreamName(parsing: "m/b"), number: 0)

    /// `count` events of `size` bytes each from `offset`.
    static func events(from offset: UInt64, count: Int, size: UInt32 = 100) -> [PointedEvent] {
        (0..<count).map { i in
            PointedEvent(
                event: Event(timestamp: 0, payload: []),
                pointer: EventPointer(segment: segment, offset: offset + UInt64(i) * UInt64(size), length: size))
        }
    }

    static func info(_ length: UInt64) -> SegmentInfo {
        SegmentInfo(segment: segment, startOffset: 0, length: length, sealed: false, incarnation: 1)
    }

    @Test("pushes that came while the appender was busy are taken as one batch, in order, with the last state")
    func coalesces() async throws {
        let backlog = Backlog(limit: 1 << 20)
        for p in 0..<5 {
            try await backlog.put(Self.events(from: UInt64(p * 100), count: 1), info: Self.info(UInt64(p * 100 + 100)))
        }
        let batch = try #require(await backlog.take(maxBytes: 1 << 20))
        #expect(batch.events.map(\.pointer.offset) == [0, 100, 200, 300, 400])
        #expect(batch.info.length == 500)
        // At most maxBytes per take (but always one event), the rest next time.
        try await backlog.put(Self.events(from: 500, count: 3), info: Self.info(800))
        #expect(await backlog.take(maxBytes: 250)?.events.count == 2)
        #expect(await backlog.take(maxBytes: 50)?.events.map(\.pointer.offset) == [700])
        // A heartbeat (no events) still brings the state.
        try await backlog.put([], info: Self.info(900))
        let beat = try #require(await backlog.take(maxBytes: 1 << 20))
        #expect(beat.events.isEmpty && beat.info.length == 900)
        // Closed: what waits is taken, then nothing.
        try await backlog.put(Self.events(from: 900, count: 1), info: Self.info(1000))
        backlog.close()
        #expect(await backlog.take(maxBytes: 1 << 20)?.events.count == 1)
        #expect(await backlog.take(maxBytes: 1 << 20) == nil)
    }

    @Test("a full backlog holds the follow back until the appender takes; a waiting taker wakes at a put")
    func holdsBack() async throws {
        let backlog = Backlog(limit: 300)
        try await backlog.put(Self.events(from: 0, count: 3), info: Self.info(300))
        let passed = Counter()
        let putter = Task {
            try await backlog.put(Self.events(from: 300, count: 1), info: Self.info(400))
            passed.bump()
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(passed.value == 0, "a put past the limit waits")
        #expect(await backlog.take(maxBytes: 1 << 20)?.events.count == 3)
        try await putter.value
        #expect(passed.value == 1)
        #expect(await backlog.take(maxBytes: 1 << 20)?.events.map(\.pointer.offset) == [300])
        // The appender waits for the next push.
        let taker = Task { await backlog.take(maxBytes: 1 << 20)?.events.count }
        try await Task.sleep(for: .milliseconds(100))
        try await backlog.put(Self.events(from: 400, count: 2), info: Self.info(600))
        #expect(await taker.value == 2)
    }

    @Test("the appender's failure reaches a waiting put and every later one; a cancelled put stops waiting")
    func failureAndCancellation() async throws {
        struct Broke: Error {}
        let backlog = Backlog(limit: 100)
        try await backlog.put(Self.events(from: 0, count: 1), info: Self.info(100))
        let waiting = Task { try await backlog.put(Self.events(from: 100, count: 1), info: Self.info(200)) }
        try await Task.sleep(for: .milliseconds(100))
        backlog.fail(Broke())
        await #expect(throws: Broke.self) { try await waiting.value }
        await #expect(throws: Broke.self) { try await backlog.put([], info: Self.info(200)) }

        let other = Backlog(limit: 100)
        try await other.put(Self.events(from: 0, count: 1), info: Self.info(100))
        let cancelled = Task { try await other.put(Self.events(from: 100, count: 1), info: Self.info(200)) }
        try await Task.sleep(for: .milliseconds(100))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
    }
}
