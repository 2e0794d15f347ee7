import Foundation
import Testing

@testable import SegmentStore
@testable import StreamModel

@Suite("SegmentStore recovery", .serialized)
struct RecoveryTests {
    let name = try! StreamName(parsing: "tests/recovery")
    var segment0: SegmentID { SegmentID(stream: name, number: 0) }

    /// Opens, writes, and closes without a checkpoint, leaving the journal to replay as after a crash.
    func writeWithoutCheckpoint(_ dir: TemporaryDirectory, _ payloads: [String]) async throws {
        var configuration = StoreConfiguration(dataDirectory: dir.path)
        configuration.checkpointOnClose = false
        let store = try SegmentStore(configuration: configuration)
        if (try? store.info(name)) == nil { try await store.createStream(name, segments: 2) }
        // The writer goes on from its last event number (kept across the earlier runs).
        var next = (try store.lastEventNumber(segment0, writerID: "w") ?? -1) + 1
        for p in payloads {
            let (batch, _) = try frames([p])
            _ = try await store.append(segment0, frames: batch, writerID: "w", firstEventNumber: next)
            next += 1
        }
        try await store.seal(SegmentID(stream: name, number: 1))
        store.close()
    }

    func journalFiles(_ dir: TemporaryDirectory) -> [String] {
        JournalFiles.sequences(directory: dir.path + "/journal").map {
            JournalFiles.path(directory: dir.path + "/journal", sequence: $0)
        }
    }

    @Test("the journal is replayed after a stop without a checkpoint")
    func replay() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await writeWithoutCheckpoint(dir, ["a", "bb", "ccc"])
        let store = try openStore(dir)
        defer { store.close() }
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data) == ["a", "bb", "ccc"])
        #expect(try store.info(SegmentID(stream: name, number: 1)).sealed)
        #expect(try store.lastEventNumber(segment0, writerID: "w") == 2)
    }

    @Test("a torn journal tail is cut off and the rest survives")
    func tornTail() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await writeWithoutCheckpoint(dir, ["a", "bb"])
        let last = try #require(journalFiles(dir).last)
        let handle = try #require(FileHandle(forWritingAtPath: last))
        handle.seekToEndOfFile()
        // Half a record: a plausible length and CRC, then the body stops.
        handle.write(Data([0, 0, 0, 200, 1, 2, 3, 4, 0, 0, 0]))
        try handle.close()
        let store = try openStore(dir)
        #expect(try payloads(store.read(segment0, from: 0, maxBytes: 1000).data) == ["a", "bb"])
        let (batch, _) = try frames(["after"])
        _ = try await store.append(segment0, frames: batch)
        store.close()
        let again = try openStore(dir)
        defer { again.close() }
        #expect(try payloads(again.read(segment0, from: 0, maxBytes: 1000).data) == ["a", "bb", "after"])
    }

    @Test("corruption in the middle of the journal is an error naming the file and offset")
    func corruptJournal() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await writeWithoutCheckpoint(dir, ["first", "second", "third"])
        let last = try #require(journalFiles(dir).last)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: last))
        bytes[JournalFiles.headerSize + 20] ^= 0x5A  // inside the first record
        try bytes.write(to: URL(fileURLWithPath: last))
        do {
            _ = try openStore(dir)
            Issue.record("a store with a corrupt journal opened")
        } catch {
            #expect(code(of: error) == .corruptData)
            #expect("\(error)".contains(last))
            #expect("\(error)".contains("offset \(JournalFiles.headerSize)"))
        }
    }

    @Test("a damaged or cut checkpoint stops the store at open, naming the file", arguments: ["bit flip", "cut"])
    func corruptCheckpoint(damage: String) async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await writeWithoutCheckpoint(dir, ["first"])
        let store = try openStore(dir)
        store.close()  // with a checkpoint this time
        let path = Recovery.checkpointPath(dir.path)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        if damage == "cut" { bytes.removeLast(9) } else { bytes[bytes.count / 2] ^= 0x21 }
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try openStore(dir)
            Issue.record("a store with a \(damage) checkpoint opened")
        } catch {
            #expect(code(of: error) == .corruptData)
            #expect("\(error)".contains(path), "\(error)")
        }
    }

    @Test("a corrupt segment file is never served: the read fails naming file and offset")
    func corruptSegment() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        try await store.createStream(name, segments: 1)
        let (batch, sizes) = try frames(["good", "will-be-bad"])
        _ = try await store.append(segment0, frames: batch)
        store.close()
        let path = dir.path + "/segments/tests/recovery/00000000.seg"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[sizes[0] + 20] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let reopened = try openStore(dir)
        defer { reopened.close() }
        #expect(try payloads(reopened.read(segment0, from: 0, maxBytes: sizes[0]).data) == ["good"])
        do {
            _ = try reopened.read(segment0, from: 0, maxBytes: 1000)
            Issue.record("a corrupt event was served")
        } catch {
            #expect(code(of: error) == .corruptData)
            #expect("\(error)".contains(path) && "\(error)".contains("offset \(sizes[0])"))
        }
    }

    @Test("checkpoints roll the journal and recovery still finds every event", arguments: [IOBackend.posix, .ioUring])
    func checkpoints(io: IOBackend) async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir, io: io, checkpointBytes: 4096)
        try await store.createStream(name, segments: 1)
        var expected: [String] = []
        for i in 0..<300 {
            let p = "event-\(i)-" + String(repeating: "x", count: i % 50)
            expected.append(p)
            _ = try await store.append(segment0, frames: try frames([p]).0)
        }
        #expect(store.stats.checkpoints > 3)
        store.close()
        let reopened = try openStore(dir)
        defer { reopened.close() }
        #expect(try payloads(reopened.read(segment0, from: 0, maxBytes: 1 << 20).data) == expected)
        #expect(journalFiles(dir).count == 1)
    }

    @Test("a stream deleted and created again has a new incarnation, kept by journal replay and by checkpoints")
    func incarnations() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        var configuration = StoreConfiguration(dataDirectory: dir.path)
        configuration.checkpointOnClose = false
        var store = try SegmentStore(configuration: configuration)
        try await store.createStream(name, segments: 2)
        let first = try store.info(segment0).incarnation
        try await store.deleteStream(name)
        try await store.createStream(name, segments: 2)
        let second = try store.info(name).segments.map(\.incarnation)
        #expect(first > 0 && second == [second[0], second[0]] && second[0] > first, "\(first) then \(second)")
        store.close()
        store = try openStore(dir)  // journal replay
        #expect(try store.info(segment0).incarnation == second[0])
        store.close()  // with a checkpoint
        store = try openStore(dir)
        defer { store.close() }
        #expect(try store.info(SegmentID(stream: name, number: 1)).incarnation == second[0])
    }

    @Test("a version 1 checkpoint, from before incarnations, still loads: its streams' incarnations are 0")
    func checkpointVersion1() throws {
        var catalog = Catalog()
        var state = SegmentState()
        state.length = 7
        state.incarnation = 0x1122_3344_5566_7788
        catalog.streams[name] = [state]
        let v2 = Checkpoint(journalSequence: 3, nextLSN: 9, catalog: catalog).encode()
        // The same bytes as version 1 wrote them: no incarnation, version 1, the CRC over the rest.
        let marker: [UInt8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        let at = try #require((0...(v2.count - 8)).first { Array(v2[$0..<($0 + 8)]) == marker })
        var v1 = Array(v2[0..<at] + v2[(at + 8)..<(v2.count - 4)])
        #expect(v1[8..<12] == [0, 0, 0, 2])
        v1[11] = 1
        withUnsafeBytes(of: CRC32C.checksum(v1).bigEndian) { v1.append(contentsOf: $0) }
        let loaded = try Checkpoint.decode(v1, path: "v1")
        #expect(loaded.catalog.streams[name]?.first?.length == 7)
        #expect(loaded.catalog.streams[name]?.first?.incarnation == 0)
        #expect(try Checkpoint.decode(v2, path: "v2").catalog == catalog)
    }

    @Test("a second store on the same data directory is refused")
    func lock() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let store = try openStore(dir)
        defer { store.close() }
        #expect(throws: EddyError.self) { try openStore(dir) }
    }
}
