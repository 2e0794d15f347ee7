import Foundation
import Testing

@testable import SegmentStore
@testable import StreamModel

@Suite("SegmentStore contract", .serialized)
struct SegmentStoreContractTests {
    static let backends: [IOBackend] = [.posix, .ioUring]

    let name = try! StreamName(parsing: "tests/orders")
    var segment0: SegmentID { SegmentID(stream: name, number: 0) }

    @Test("create, list, info, delete", arguments: backends)
    func lifecycle(io: IOBackend) async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir, io: io)
        defer { store.close() }
        #expect(store.ioPath.backend == io)
        try await store.createStream(name, segments: 3)
        #expect(store.listStreams().map(\.name) == [name])
        #expect(try store.info(name).segments.count == 3)
        await #expect(throws: EddyError(.streamExists, "stream 'tests/orders' already exists")) {
            try await store.createStream(name, segments: 3)
        }
        await #expect(throws: EddyError.self) {
            try await store.createStream(try StreamName(parsing: "a/b"), segments: 0)
        }
        try await store.deleteStream(name)
        #expect(store.listStreams().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/segments/tests/orders/00000000.seg"))
        do {
            _ = try store.info(segment0)
            Issue.record("info of a deleted stream succeeded")
        } catch {
            #expect(code(of: error) == .streamNotFound)
        }
    }

    @Test("append then read returns the same events at the acknowledged offsets", arguments: backends)
    func appendRead(io: IOBackend) async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir, io: io)
        defer { store.close() }
        try await store.createStream(name, segments: 2)
        let (batch1, sizes1) = try frames(["a", "bb", "ccc"])
        let (batch2, _) = try frames(["dddd"])
        let ack1 = try await store.append(segment0, frames: batch1)
        let ack2 = try await store.append(segment0, frames: batch2)
        #expect(ack1.firstOffset == 0)
        #expect(ack2.firstOffset == UInt64(batch1.count))
        let pointers = ack1.pointers(frameSizes: sizes1)
        #expect(pointers.map(\.offset) == [0, UInt64(sizes1[0]), UInt64(sizes1[0] + sizes1[1])])
        let all = try store.read(segment0, from: 0, maxBytes: 1 << 20)
        #expect(try payloads(all.data) == ["a", "bb", "ccc", "dddd"])
        #expect(all.info.length == UInt64(batch1.count + batch2.count))
        // One event by its pointer.
        let second = try store.read(segment0, from: pointers[1].offset, maxBytes: Int(pointers[1].length))
        #expect(try payloads(second.data) == ["bb"])
        // A read that starts inside an event returns the raw bytes from there.
        let middle = try store.read(segment0, from: 5, maxBytes: 7)
        #expect(middle.data == Array(batch1[5..<12]))
        // At the end: nothing. Past it: an error.
        #expect(try store.read(segment0, from: all.info.length, maxBytes: 10).data.isEmpty)
        #expect(throws: EddyError.self) { try store.read(segment0, from: all.info.length + 1, maxBytes: 10) }
        // The other segment is untouched.
        #expect(try store.info(SegmentID(stream: name, number: 1)).length == 0)
        #expect(throws: EddyError.self) { try store.read(SegmentID(stream: name, number: 2), from: 0, maxBytes: 1) }
    }

    @Test("malformed frames are refused and nothing is written")
    func malformed() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        var (batch, _) = try frames(["hello", "world"])
        batch[batch.count - 1] ^= 0xFF
        await #expect(throws: EddyError.self) { try await store.append(segment0, frames: batch) }
        await #expect(throws: EddyError.self) { try await store.append(segment0, frames: Array(batch.dropLast())) }
        await #expect(throws: EddyError.self) { try await store.append(segment0, frames: []) }
        #expect(try store.info(segment0).length == 0)
    }

    @Test("a batch that overtook an earlier one of its writer is refused as a gap, then written after it")
    func eventNumberGap() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        let (b0, _) = try frames(["e0", "e1"])
        let (b2, _) = try frames(["e2"])
        // A new writer starts at 0: its first batch at 2 means batch 0 is still on its way.
        let gap = await #expect(throws: EddyError.self) {
            try await store.append(segment0, frames: b2, writerID: "w", firstEventNumber: 2)
        }
        #expect(gap?.code == .eventNumberGap && gap?.isRetriable == true, "\(String(describing: gap))")
        #expect(gap?.message.contains("continues at event number 0") == true, "\(String(describing: gap))")
        _ = try await store.append(segment0, frames: b0, writerID: "w", firstEventNumber: 0)
        // Past the next number (3 instead of 2): a gap again; at 2 it is written.
        await #expect(throws: EddyError.self) {
            try await store.append(segment0, frames: b2, writerID: "w", firstEventNumber: 3)
        }
        let a2 = try await store.append(segment0, frames: b2, writerID: "w", firstEventNumber: 2)
        #expect(!a2.duplicate)
        let retry0 = try await store.append(segment0, frames: b0, writerID: "w", firstEventNumber: 0)
        #expect(retry0.duplicate && retry0.firstOffset == 0)
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data) == ["e0", "e1", "e2"])
    }

    @Test("a sequenced writer (~ID) may jump ahead between batches; retries and conflicts are told apart as ever")
    func sequencedWriter() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        let (b0, _) = try frames(["a0", "a1"])
        let (b1, _) = try frames(["b0"])
        let first = try await store.append(segment0, frames: b0, writerID: "~w", firstEventNumber: 5 << 20)
        let second = try await store.append(segment0, frames: b1, writerID: "~w", firstEventNumber: 9 << 20)
        #expect(!first.duplicate && !second.duplicate && second.firstOffset == UInt64(b0.count))
        let retry = try await store.append(segment0, frames: b0, writerID: "~w", firstEventNumber: 5 << 20)
        #expect(retry.duplicate && retry.firstOffset == 0)
        // Below the last number and no recent batch's start: a conflict, not a write.
        let conflict = await #expect(throws: EddyError.self) {
            try await store.append(segment0, frames: b1, writerID: "~w", firstEventNumber: 7 << 20)
        }
        #expect(conflict?.code == .eventNumberConflict, "\(String(describing: conflict))")
        // The same jump from an ordinary writer is a gap.
        _ = try await store.append(segment0, frames: b1, writerID: "w", firstEventNumber: 0)
        let gap = await #expect(throws: EddyError.self) {
            try await store.append(segment0, frames: b1, writerID: "w", firstEventNumber: 4)
        }
        #expect(gap?.code == .eventNumberGap, "\(String(describing: gap))")
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data) == ["a0", "a1", "b0", "b0"])
    }

    @Test("a retried batch is answered with its original position, not written twice")
    func exactlyOnce() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        let (b1, _) = try frames(["e0", "e1"])
        let (b2, _) = try frames(["e2"])
        let a1 = try await store.append(segment0, frames: b1, writerID: "w", firstEventNumber: 0)
        let a2 = try await store.append(segment0, frames: b2, writerID: "w", firstEventNumber: 2)
        let retry1 = try await store.append(segment0, frames: b1, writerID: "w", firstEventNumber: 0)
        let retry2 = try await store.append(segment0, frames: b2, writerID: "w", firstEventNumber: 2)
        #expect(retry1 == AppendAck(segment: segment0, firstOffset: a1.firstOffset, eventCount: 2, duplicate: true))
        #expect(retry2.firstOffset == a2.firstOffset && retry2.duplicate)
        #expect(try store.lastEventNumber(segment0, writerID: "w") == 2)
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data) == ["e0", "e1", "e2"])
        // Overlapping but not a recent batch: a conflict, not a silent duplicate.
        await #expect(throws: EddyError.self) {
            try await store.append(segment0, frames: b1, writerID: "w", firstEventNumber: 1)
        }
        // Another writer is independent; no writer ID means no deduplication.
        _ = try await store.append(segment0, frames: b2, writerID: "other", firstEventNumber: 0)
        _ = try await store.append(segment0, frames: b2)
        _ = try await store.append(segment0, frames: b2)
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data).count == 6)
        #expect(store.stats.duplicates == 2)
    }

    @Test("seal ends the segment; truncate drops a prefix at an event boundary")
    func sealTruncate() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        let (batch, sizes) = try frames(["one", "two", "three"])
        _ = try await store.append(segment0, frames: batch)
        do {
            _ = try await store.truncate(segment0, at: 3)
            Issue.record("truncate inside an event succeeded")
        } catch {
            #expect(code(of: error) == .notEventBoundary)
        }
        let info = try await store.truncate(segment0, at: UInt64(sizes[0]))
        #expect(info.startOffset == UInt64(sizes[0]))
        #expect(throws: EddyError.self) { try store.read(segment0, from: 0, maxBytes: 100) }
        #expect(try payloads(store.read(segment0, from: UInt64(sizes[0]), maxBytes: 1000).data) == ["two", "three"])
        try await store.seal(segment0)
        let end = try store.read(segment0, from: UInt64(batch.count), maxBytes: 100)
        #expect(end.endOfSegment)
        do {
            _ = try await store.append(segment0, frames: batch)
            Issue.record("append to a sealed segment succeeded")
        } catch {
            #expect(code(of: error) == .segmentSealed)
        }
    }

    @Test("a tail read waits for the next append, and times out empty")
    func tailWait() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 1)
        let empty = try await store.read(segment0, from: 0, maxBytes: 100, wait: .milliseconds(50))
        #expect(empty.data.isEmpty)
        async let waited = store.read(segment0, from: 0, maxBytes: 100, wait: .seconds(10))
        try await Task.sleep(for: .milliseconds(100))
        let (batch, _) = try frames(["late"])
        _ = try await store.append(segment0, frames: batch)
        let result = try await waited
        #expect(try payloads(result.data) == ["late"])
        async let sealedWait = store.read(segment0, from: UInt64(batch.count), maxBytes: 100, wait: .seconds(10))
        try await Task.sleep(for: .milliseconds(50))
        try await store.seal(segment0)
        #expect(try await sealedWait.endOfSegment)
    }

    @Test("many concurrent appenders share syncs (group commit)")
    func groupCommit() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        try await store.createStream(name, segments: 4)
        let (batch, _) = try frames(["x"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<64 {
                group.addTask {
                    for _ in 0..<20 {
                        _ = try await store.append(SegmentID(stream: name, number: UInt32(w % 4)), frames: batch)
                    }
                }
            }
            try await group.waitForAll()
        }
        let stats = store.stats
        #expect(stats.events == 64 * 20)
        #expect(stats.syncs < stats.events, "expected shared syncs, got \(stats.syncs) for \(stats.events) appends")
    }
}
