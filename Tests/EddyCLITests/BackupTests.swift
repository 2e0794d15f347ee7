import CacheNode
import EddyTestSupport
import Foundation
import ObjectStorage
import StreamModel
import Testing
import WriteBack

/// `eddy backup` and `eddy restore` as a user runs them: real processes, SeaweedFS and a folder.
@Suite("backup and restore as real processes", .serialized)
struct BackupTests {
    /// Every event of a stream as pointer -> JSON line (pointer, key, timestamp, payload), read through `node`.
    static func events(_ stream: String, node: String) throws -> [String: String] {
        let read = try eddy(["read", stream, "--format", "json", "--server", node])
        try #require(read.status == 0, "\(read.stderr)")
        var out: [String: String] = [:]
        for line in read.stdout.split(separator: "\n") {
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            out[try #require(object["pointer"] as? String)] = String(line)
        }
        return out
    }

    @Test("backup to SeaweedFS (incremental), delete the stream, restore it: every event back at the same pointer")
    func backupDeleteRestore() async throws {
        let ring = try Ring(nodes: 3)
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[1]
        let seaweed = try await SeaweedFS.shared()
        let bucket = "eddy-backup-" + UUID().uuidString.lowercased().prefix(8)
        let s3 = try await seaweed.makeStore(bucket: bucket)
        let credentials = ["AWS_ACCESS_KEY_ID": seaweed.accessKey, "AWS_SECRET_ACCESS_KEY": seaweed.secretKey]
        let s3Flags = ["--s3-endpoint", seaweed.endpoint, "--s3-path-style"]
        func backup(_ arguments: [String]) throws -> CommandResult {
            try eddy(
                ["backup"] + arguments + ["--to", "s3://\(bucket)/backups"] + s3Flags + ["--server", node],
                environment: credentials)
        }
        func restore(_ arguments: [String]) throws -> CommandResult {
            try eddy(
                ["restore"] + arguments + ["--from", "s3://\(bucket)/backups"] + s3Flags + ["--server", node],
                environment: credentials)
        }

        #expect(try eddy(["create", "bk/events", "--segments", "3", "--server", node]).status == 0)
        // About 1.2 MB per segment: each segment's backup spans more than one aligned MiB object. Sizes vary, so
        // events straddle object boundaries.
        let lines = (0..<6000).map { "event \($0) " + String(repeating: "x", count: 300 + ($0 * 37) % 500) }
        let appended = try eddy(["append", "bk/events", "--server", node], input: lines.joined(separator: "\n") + "\n")
        try #require(appended.status == 0, "\(appended.stderr)")

        let first = try backup(["bk/events"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("backed up bk/events") && first.stdout.contains("3 segments"), "\(first.stdout)")
        let descriptor = try #require(
            try await StreamDescriptor.load(
                from: s3, prefix: "backups", stream: try StreamName(scope: "bk", stream: "events")))
        #expect(descriptor.segments == 3)
        let blocks = try await s3.listAll(prefix: "backups/bk/events/").map(\.key).filter { $0.hasSuffix(".blk") }
        #expect(blocks.count >= 6, "\(blocks)")

        // Incremental: only the new events are copied the second time.
        let more = (0..<30).map { "later \($0)" }
        #expect(
            try eddy(["append", "bk/events", "--server", node], input: more.joined(separator: "\n") + "\n").status == 0)
        let second = try backup(["bk/events"])
        #expect(second.status == 0, "\(second.stderr)")
        let newBytes = try #require(Self.number(before: " new bytes", in: second.stdout))
        #expect(newBytes > 0 && newBytes < 2000, "\(second.stdout)")
        #expect(try eddy(["seal", "bk/events", "--server", node]).status == 0)
        let third = try backup(["bk/events"])
        #expect(Self.number(before: " new bytes", in: third.stdout) == 0, "\(third.stdout)")

        let before = try Self.events("bk/events", node: node)
        #expect(before.count == 6030)
        #expect(try eddy(["delete", "bk/events", "--server", node]).status == 0)
        let restored = try restore(["bk/events"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.stdout.contains("6030 events"), "\(restored.stdout)")
        #expect(try Self.events("bk/events", node: node) == before, "every event at its old pointer")
        let info = try eddy(["info", "bk/events", "--server", node])
        #expect(
            info.stdout.split(separator: "\n").count == 3 && !info.stdout.contains("sealed=false"), "\(info.stdout)")

        // The restored stream is a new stream of the name, holding the backed-up bytes: backing it up to the same
        // place goes on from there.
        let afterRestore = try backup(["bk/events"])
        #expect(
            afterRestore.status == 0 && Self.number(before: " new bytes", in: afterRestore.stdout) == 0,
            "\(afterRestore.stdout) \(afterRestore.stderr)")

        // A restore never overwrites; --as makes a copy under another name.
        let again = try restore(["bk/events"])
        #expect(again.status == 1 && again.stderr.contains("exists"), "\(again.stderr)")
        let copy = try restore(["bk/events", "--as", "bk/copy"])
        #expect(copy.status == 0, "\(copy.stderr)")
        let copied = try Self.events("bk/copy", node: node)
        #expect(copied.count == 6030)
        for (pointer, line) in before.prefix(50) {
            let moved = pointer.replacingOccurrences(of: "bk/events/", with: "bk/copy/")
            #expect(copied[moved] == line.replacingOccurrences(of: "bk/events/", with: "bk/copy/"))
        }

        // Clear messages for what cannot be done.
        let missing = try restore(["bk/nothing"])
        #expect(missing.status == 1 && missing.stderr.contains("no backup of bk/nothing"), "\(missing.stderr)")
        let both = try eddy(["backup", "bk/events", "--all", "--to", "file:///tmp/x", "--server", node])
        #expect(both.status != 0 && both.stderr.contains("--all"), "\(both.stderr)")

        // Created again with other bytes, the stream is not backed up into the earlier one's backup.
        #expect(try eddy(["delete", "bk/events", "--server", node]).status == 0)
        #expect(try eddy(["create", "bk/events", "--segments", "3", "--server", node]).status == 0)
        let other = (0..<7000).map { "other \($0) " + String(repeating: "y", count: 400) }
        #expect(
            try eddy(["append", "bk/events", "--server", node], input: other.joined(separator: "\n") + "\n").status == 0
        )
        let mixed = try backup(["bk/events"])
        #expect(mixed.status == 1 && mixed.stderr.contains("earlier stream of that name"), "\(mixed.stderr)")
    }

    @Test("backup --all to a folder and restore --all; a stream truncated before its backup keeps its pointers")
    func allStreamsAndATruncatedStream() async throws {
        let ring = try Ring(nodes: 1)
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "a/one", "--segments", "2", "--server", node]).status == 0)
        #expect(try eddy(["create", "b/two", "--segments", "1", "--server", node]).status == 0)
        let one = try eddy(
            ["append", "a/one", "--server", node], input: (0..<200).map { "one \($0)" }.joined(separator: "\n") + "\n")
        let two = try eddy(
            ["append", "b/two", "--server", node], input: (0..<100).map { "two \($0)" }.joined(separator: "\n") + "\n")
        #expect(one.status == 0 && two.status == 0)
        // b/two loses its first 40 events before any backup: the backup starts at the 41st.
        let twoPointers = two.stdout.split(separator: "\n").map(String.init)
        #expect(try eddy(["truncate", "b/two", "--before", twoPointers[40], "--server", node]).status == 0)

        let folder = temporaryPath("backup-all")
        let backup = try eddy(["backup", "--all", "--to", "file://\(folder)/b", "--server", node])
        #expect(backup.status == 0, "\(backup.stderr)")
        #expect(backup.stdout.contains("a/one") && backup.stdout.contains("b/two"), "\(backup.stdout)")
        let before = try Self.events("a/one", node: node).merging(Self.events("b/two", node: node)) { a, _ in a }
        #expect(before.count == 260)

        for name in ["a/one", "b/two"] { #expect(try eddy(["delete", name, "--server", node]).status == 0) }
        let restore = try eddy(["restore", "--all", "--from", "file://\(folder)/b", "--server", node])
        #expect(restore.status == 0, "\(restore.stderr)")
        let after = try Self.events("a/one", node: node).merging(Self.events("b/two", node: node)) { a, _ in a }
        #expect(after == before, "both streams back, b/two from its 41st event at the same pointers")
        let info = try eddy(["info", "b/two", "--server", node])
        let start = try EventPointer(parsing: twoPointers[40]).offset
        #expect(info.stdout.contains("start=\(start) "), "\(info.stdout)")
    }

    /// The integer just before `suffix` in `text` (`... 1234 new bytes ...`).
    static func number(before suffix: String, in text: String) -> Int? {
        guard let range = text.range(of: suffix) else { return nil }
        let digits = text[..<range.lowerBound].reversed().prefix { $0.isNumber }
        return Int(String(digits.reversed()))
    }
}

@Suite("pipelined appends through nodes, as real processes")
struct PipelinedAppendTests {
    @Test("a writer's pipelined batches of one segment reach the store in order through every node (owner or not)")
    func pipelinedBatchesStayInOrder() throws {
        let ring = try Ring(nodes: 3)
        defer { ring.stopAll() }
        #expect(try eddy(["create", "pa/events", "--segments", "1", "--server", ring.nodeAddresses[0]]).status == 0)
        var expected: [String] = []
        for (n, node) in ring.nodeAddresses.enumerated() {
            let lines = (0..<2000).map { "node \(n) event \($0)" }
            // Batches of 5 events, 32 in flight: the node must not let a later batch overtake an earlier one.
            let appended = try eddy(
                ["append", "pa/events", "--batch", "5", "--inflight", "32", "--server", node],
                input: lines.joined(separator: "\n") + "\n")
            #expect(appended.status == 0, "through \(node): \(appended.stderr)")
            expected += lines
        }
        let read = try eddy(["read", "pa/events", "--server", ring.nodeAddresses[2]])
        #expect(read.stdout.split(separator: "\n").map(String.init) == expected)
    }
}

extension BackupTests {
    @Test(
        "restore --from a node's write-back folder (no descriptor): the flushed events back at their pointers, the event cut by the flushed watermark left out with a warning"
    )
    func restoreFromWriteBack() async throws {
        let folder = temporaryPath("restore-wb")
        // 64 KiB blocks and the default --flush-idle of 30 s: the full blocks are flushed, the tail is not, so the
        // manifest's watermark is a block boundary inside an event.
        let ring = try Ring(nodes: 1, nodeArguments: ["--object-store", "file://\(folder)", "--block-size", "64K"])
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "rw/events", "--segments", "2", "--server", node]).status == 0)
        let lines = (0..<4000).map { "event \($0) " + String(repeating: "w", count: 90 + ($0 * 13) % 70) }
        let appended = try eddy(["append", "rw/events", "--server", node], input: lines.joined(separator: "\n") + "\n")
        try #require(appended.status == 0, "\(appended.stderr)")

        let name = try StreamName(scope: "rw", stream: "events")
        let objects = try FileObjectStore(root: folder)
        let store = try await RingTests.client([ring.storeAddress])
        defer { Task { await store.close() } }
        var watermarks: [UInt32: UInt64] = [:]
        for s: UInt32 in 0..<2 {
            let segment = SegmentID(stream: name, number: s)
            let full = try await store.info(segment).length / (64 << 10) * (64 << 10)
            try #require(full >= 2 * (64 << 10), "each segment fills at least two blocks")
            let deadline = ContinuousClock.now + .seconds(120)
            var manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
            while manifest.flushed < full && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
            }
            try #require(manifest.flushed == full, "segment \(s) flushed to \(manifest.flushed), not \(full)")
            watermarks[s] = full
        }
        #expect(try await objects.head("rw/events/stream.json") == nil, "no descriptor at a write-back location")

        let restored = try eddy(
            ["restore", "rw/events", "--as", "rw/copy", "--from", "file://\(folder)", "--server", node])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.stderr.contains("never flushed; left out"), "a warning per cut event: \(restored.stderr)")
        // The copy holds exactly the events that end at or before each segment's watermark, at the same offsets.
        let source = try Self.events("rw/events", node: node)
        var expected: [String: String] = [:]
        for (pointer, line) in source {
            let p = try EventPointer(parsing: pointer)
            guard p.nextOffset <= watermarks[p.segment.number]! else { continue }
            expected[pointer.replacingOccurrences(of: "rw/events/", with: "rw/copy/")] =
                line.replacingOccurrences(of: "rw/events/", with: "rw/copy/")
        }
        #expect(expected.count > 1000 && expected.count < source.count, "\(expected.count) of \(source.count)")
        let copy = try Self.events("rw/copy", node: node)
        #expect(copy.count == expected.count)
        #expect(copy == expected, "the copy holds the flushed events at their offsets")
    }
}
