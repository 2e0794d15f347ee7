import CacheNode
import EddyClient
import Foundation
import NIOCore
import ObjectStorage
import StreamModel
import Testing
import WriteBack

/// SIGKILL of a segment's owner at each step of a flush (the node's `EDDY_TEST_CRASH_AT` hook): the next owner
/// finishes the work, the manifest never points at a missing object, and the objects tile the segment with the
/// store's bytes (nothing flushed twice differently).
@Suite("write-back when the owner is killed mid-flush, as real processes", .serialized)
struct FlushCrashTests {
    /// The block objects of a segment, decoded, in key order.
    static func blocks(_ objects: FileObjectStore, _ segment: SegmentID) async throws -> [BlockObject] {
        var out: [BlockObject] = []
        for info in try await objects.listAll(prefix: BlockObject.segmentFolder(prefix: "", segment: segment)) {
            out.append(try BlockObject.decode(try await objects.get(info.key), key: info.key))
        }
        return out
    }

    @Test(
        "killed before the PUT, between block and manifest, or after the manifest before the ack: the next owner finishes",
        arguments: ["before-put", "after-put", "after-manifest"])
    func ownerKilledMidFlush(point: String) async throws {
        let folder = temporaryPath("flush-crash")
        let marker = folder + "-crashed"
        let ring = try Ring(
            nodes: 3,
            nodeArguments: ["--object-store", "file://\(folder)", "--flush-idle", "1", "--block-size", "64K"],
            environment: ["EDDY_TEST_CRASH_AT": point, "EDDY_TEST_CRASH_MARKER": marker, "EDDY_TEST_CRASH_SKIP": "3"])
        defer { ring.stopAll() }
        let store = try await RingTests.client([ring.storeAddress], timeout: .seconds(60))
        defer { Task { await store.close() } }
        let name = try StreamName(scope: "fc", stream: "events")
        _ = try await store.send(.createStream(name, segments: 1))
        let segment = SegmentID(stream: name, number: 0)
        try await RingTests.fill(store, name, segments: 1, count: 1_000, size: 1_000)  // about 16 blocks
        let length = try await store.info(segment).length
        // Each crash point is passed once per 64 KiB block object (a task may carry several): the kill at the
        // fourth pass comes before the end. (How far the manifest got
        // when the test looks depends on how soon the next owner takes over, which a loaded machine delays or
        // not: that is not asserted.)
        try #require(length > 8 * 65_536)
        let objects = try FileObjectStore(root: folder)

        // The owner dies at the crash point of its fourth pass.
        let deadline = ContinuousClock.now + .seconds(120)
        while !FileManager.default.fileExists(atPath: marker) {
            guard ContinuousClock.now < deadline else {
                throw CLIError("no node reached \(point); logs: \(ring.nodes.map(\.log).joined())")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Right after the kill, the manifest covers only objects that exist.
        let early = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        let earlyBlocks = try await Self.blocks(objects, segment)
        #expect(early.flushed <= (earlyBlocks.last?.end ?? 0), "the manifest points at no missing object")

        // Another node takes the segment over and finishes it.
        let manifests = try await WriteBackTests.waitUntilFlushed(
            objects, prefix: "", name, lengths: [0: length], within: .seconds(180), ring: ring)
        #expect(manifests[0]?.flushed == length)
        let blocks = try await Self.blocks(objects, segment)
        var at: UInt64 = 0
        for block in blocks {
            #expect(block.start == at, "objects tile the segment without gap or overlap")
            let (_, bytes) = try await store.read(segment, from: block.start, maxBytes: Int(block.end - block.start))
            #expect(bytes == block.bytes, "object at \(block.start) holds the store's bytes")
            at = block.end
        }
        #expect(at == length)
        #expect(ring.nodes.filter { !$0.process.isRunning }.count == 1, "exactly one node was killed")
    }
}
