import Foundation
import Synchronization
import Testing

@testable import SegmentStore
@testable import StreamModel

/// Holds background checkpoints until released, and says whether they go on or are abandoned (a crash).
final class CheckpointGate: Sendable {
    private let released = DispatchSemaphore(value: 0)
    private let proceed = Atomic<Bool>(true)
    let held = Atomic<Int>(0)

    func hook() -> Bool {
        held.add(1, ordering: .relaxed)
        released.wait()
        released.signal()  // once released, every later checkpoint passes too
        return proceed.load(ordering: .relaxed)
    }

    func release(proceeding: Bool) {
        proceed.store(proceeding, ordering: .relaxed)
        released.signal()
    }
}

@Suite("SegmentStore checkpoints", .serialized)
struct CheckpointTests {
    let name = try! StreamName(parsing: "tests/checkpoints")
    var segment0: SegmentID { SegmentID(stream: name, number: 0) }

    func configuration(_ dir: TemporaryDirectory, checkpointBytes: UInt64 = 64 << 20) -> StoreConfiguration {
        var configuration = StoreConfiguration(dataDirectory: dir.path)
        configuration.checkpointBytes = checkpointBytes
        configuration.logger.logLevel = .warning
        return configuration
    }

    func journalCount(_ dir: TemporaryDirectory) -> Int {
        JournalFiles.sequences(directory: dir.path + "/journal").count
    }

    /// A store on `dir` whose background checkpoints wait at `gate`, a stream of `segments`, and `count` events
    /// appended to its segment 0 (returned).
    func storeHeldAtCheckpoint(
        _ dir: TemporaryDirectory, _ gate: CheckpointGate, segments: UInt32, count: Int, checkpointOnClose: Bool
    ) async throws -> (SegmentStore, [String]) {
        var config = configuration(dir, checkpointBytes: 4096)
        config.checkpointHook = { gate.hook() }
        config.checkpointOnClose = checkpointOnClose
        let store = try SegmentStore(configuration: config)
        try await store.createStream(name, segments: segments)
        var expected: [String] = []
        for i in 0..<count {
            let p = "event-\(i)-" + String(repeating: "y", count: 64 + i % 20)
            expected.append(p)
            _ = try await store.append(segment0, frames: try frames([p]).0)
        }
        return (store, expected)
    }

    /// Opens the store on `dir` again and expects segment 0 to hold exactly `expected`.
    func expectReopened(_ dir: TemporaryDirectory, holding expected: [String]) throws {
        let reopened = try openStore(dir)
        defer { reopened.close() }
        #expect(try payloads(reopened.read(segment0, from: 0, maxBytes: 1 << 20).data) == expected)
    }

    @Test("appends are acknowledged while a checkpoint is written, and the journal files wait for it")
    func appendsGoOnDuringACheckpoint() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let gate = CheckpointGate()
        let (store, first) = try await storeHeldAtCheckpoint(
            dir, gate, segments: 1, count: 200, checkpointOnClose: true)
        var expected = first
        // 200 events of ~90 bytes past a 4 KiB threshold: one checkpoint started and is held; the journal went
        // on (every append above was acknowledged) into files the held checkpoint does not cover.
        #expect(gate.held.load(ordering: .relaxed) == 1)
        #expect(store.stats.checkpoints == 1, "only the checkpoint at open is written")
        #expect(journalCount(dir) == 2)
        gate.release(proceeding: true)
        for i in 200..<400 {
            let p = "event-\(i)"
            expected.append(p)
            _ = try await store.append(segment0, frames: try frames([p]).0)
        }
        store.close()
        #expect(store.stats.checkpoints > 2)
        #expect(journalCount(dir) == 1)
        try expectReopened(dir, holding: expected)
    }

    @Test("a crash while a checkpoint is written loses nothing: recovery replays every journal file")
    func crashDuringACheckpoint() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let gate = CheckpointGate()
        let (store, expected) = try await storeHeldAtCheckpoint(
            dir, gate, segments: 2, count: 150, checkpointOnClose: false)
        #expect(gate.held.load(ordering: .relaxed) == 1)
        gate.release(proceeding: false)  // the checkpoint never reaches the disk
        store.close()
        #expect(journalCount(dir) >= 2)
        try expectReopened(dir, holding: expected)
        #expect(journalCount(dir) == 1, "the checkpoint at open covers what was replayed")
    }

    /// Writes 20 events of 100 bytes to a new stream `name`, closes with a checkpoint, deletes the stream, runs
    /// `then` and closes without a checkpoint (as a crash would leave it).
    func deleteAfterCheckpoint(_ dir: TemporaryDirectory, then: (SegmentStore) async throws -> Void) async throws {
        let first = try openStore(dir)
        try await first.createStream(name, segments: 2)
        for i in 0..<20 {
            _ = try await first.append(segment0, frames: try frames([String(repeating: "\(i % 10)", count: 100)]).0)
        }
        first.close()
        var config = configuration(dir)
        config.checkpointOnClose = false
        let store = try SegmentStore(configuration: config)
        try await store.deleteStream(name)
        try await then(store)
        store.close()
    }

    @Test("a stream deleted after the last checkpoint, then a crash: the store opens without it")
    func deletedThenCrash() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await deleteAfterCheckpoint(dir) { _ in }
        #expect(!FileManager.default.fileExists(atPath: SegmentFile.path(data: dir.path, segment: segment0)))
        let reopened = try openStore(dir)
        defer { reopened.close() }
        #expect(throws: EddyError.self) { try reopened.info(name) }
        #expect(!FileManager.default.fileExists(atPath: SegmentFile.path(data: dir.path, segment: segment0)))
    }

    @Test("a stream deleted and created again shorter after the last checkpoint, then a crash: the new one is kept")
    func recreatedShorterThenCrash() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await deleteAfterCheckpoint(dir) { store in
            try await store.createStream(name, segments: 1)
            _ = try await store.append(segment0, frames: try frames(["short"]).0)
        }
        let reopened = try openStore(dir)
        defer { reopened.close() }
        #expect(try reopened.info(name).segments.count == 1)
        #expect(try payloads(reopened.read(segment0, from: 0, maxBytes: 1 << 20).data) == ["short"])
    }
}
