import EddyTestSupport
import Foundation
import NIOCore
import ObjectStorage
import StreamModel
import Testing
import WriteBack

@testable import CacheNode

/// The write-back formats on their own: block objects, manifests, flush tasks, the journal stream's name.
@Suite struct WriteBackUnitTests {
    static func bytes(_ count: Int, compressible: Bool) -> ByteBuffer {
        ByteBuffer(bytes: compressible ? (0..<count).map { UInt8($0 % 7) } : pseudoRandomBytes(count, seed: 9))
    }

    @Test(arguments: [true, false]) func blockObjectsRoundTrip(compressible: Bool) throws {
        let data = Self.bytes(100_000, compressible: compressible)
        let object = BlockObject(segment: 3, start: 1 << 20, bytes: data)
        let encoded = object.encoded()
        // zstd only when it shrinks the bytes.
        #expect(compressible ? encoded.readableBytes < 50_000 : encoded.readableBytes == 100_044)
        let decoded = try BlockObject.decode(encoded, key: "k")
        #expect(decoded == object)
        #expect(decoded.end == (1 << 20) + 100_000)
    }

    @Test func damagedObjectsAreCorruptData() throws {
        let encoded = BlockObject(segment: 0, start: 0, bytes: Self.bytes(5_000, compressible: true)).encoded()
        let cases: [(String, (inout [UInt8]) -> Void)] = [
            ("magic", { $0[0] ^= 1 }),
            ("header", { $0[20] ^= 1 }),
            ("payload", { $0[$0.count - 3] ^= 0x10 }),
            ("cut", { $0.removeLast(10) }),
            ("short", { $0 = Array($0.prefix(30)) }),
        ]
        for (what, damage) in cases {
            var bytes = Array(encoded.readableBytesView)
            damage(&bytes)
            do {
                _ = try BlockObject.decode(ByteBuffer(bytes: bytes), key: "a/b.blk")
                Issue.record("a block object with a damaged \(what) decoded")
            } catch {
                #expect(error.code == .corruptData, "\(what)")
                #expect(error.message.contains("a/b.blk"))
            }
        }
    }

    @Test func manifestsThatContradictThemselvesAreCorruptData() throws {
        let segment = SegmentID(stream: try StreamName(scope: "sc", stream: "st"), number: 3)
        var good = SegmentManifest(segment: segment)
        good.first = 100
        good.flushed = 5000
        good.eventBoundary = 4900
        good.nextFrame = 5010
        good.objects = 2
        let key = "sc/st/00000003.manifest"
        #expect(try SegmentManifest.decode(Array(try JSONEncoder().encode(good)), key: key, segment: segment) == good)
        let cases: [(String, (inout SegmentManifest) -> Void)] = [
            ("another segment's", { $0.segment = "sc/st/00000004" }),
            ("flushed below first", { $0.flushed = 50 }),
            ("boundary above flushed", { $0.eventBoundary = 6000 }),
            ("negative objects", { $0.objects = -1 }),
        ]
        for (what, damage) in cases {
            var bad = good
            damage(&bad)
            #expect(throws: EddyError.self, "\(what)") {
                try SegmentManifest.decode(Array(try JSONEncoder().encode(bad)), key: key, segment: segment)
            }
        }
        do {
            _ = try SegmentManifest.decode(Array("{\"segment\": 1".utf8), key: key, segment: segment)
            Issue.record("a cut manifest decoded")
        } catch {
            #expect(error.code == .corruptData && error.message.contains(key))
        }
    }

    @Test func keysAreFixedWidthAndFixedDepth() throws {
        let segment = SegmentID(stream: try StreamName(scope: "sc", stream: "st"), number: 12)
        #expect(
            BlockObject.key(prefix: "p", segment: segment, start: 4_194_304)
                == "p/sc/st/00000012/00000000000004194304.blk")
        #expect(BlockObject.key(prefix: "", segment: segment, start: 0) == "sc/st/00000012/00000000000000000000.blk")
        #expect(SegmentManifest.key(prefix: "p", segment: segment) == "p/sc/st/00000012.manifest")
        #expect(BlockObject.start(ofKey: "p/sc/st/00000012/00000000000004194304.blk") == 4_194_304)
        #expect(BlockObject.start(ofKey: "p/sc/st/00000012.manifest") == nil)
        #expect(BlockObject.start(ofKey: "x/123.blk") == nil)
    }

    @Test func manifestsSaveAndLoad() async throws {
        let store = try FileObjectStore(root: NSTemporaryDirectory() + "eddy-manifest-" + UUID().uuidString)
        let segment = SegmentID(stream: try StreamName(scope: "sc", stream: "st"), number: 1)
        #expect(
            try await SegmentManifest.load(from: store, prefix: "p", segment: segment)
                == SegmentManifest(segment: segment))
        var manifest = SegmentManifest(segment: segment)
        manifest.flushed = 1 << 20
        manifest.eventBoundary = 1_048_000
        manifest.nextFrame = 1_048_600
        manifest.objects = 1
        try await manifest.save(to: store, prefix: "p", segment: segment)
        #expect(try await SegmentManifest.load(from: store, prefix: "p", segment: segment) == manifest)
        let text = String(buffer: try await store.get(SegmentManifest.key(prefix: "p", segment: segment)))
        for key in ["\"first\"", "\"flushed\"", "\"event_boundary\"", "\"next_frame\"", "\"objects\"", "\"sealed\""] {
            #expect(text.contains(key), "\(key) in \(text)")
        }
        _ = try await store.put(
            SegmentManifest.key(prefix: "p", segment: segment), body: ByteBuffer(string: "{"), mode: .overwrite)
        await #expect(throws: EddyError.self) {
            try await SegmentManifest.load(from: store, prefix: "p", segment: segment)
        }
    }

    @Test func flushTasksTravelAsAttributes() throws {
        let segment = SegmentID(stream: try StreamName(scope: "sc", stream: "st"), number: 2)
        let task = FlushTask(segment: segment, from: 10, to: 20)
        #expect(FlushTask(attributes: task.attributes) == task)
        #expect(FlushTask(attributes: ["segment": "sc/st/00000002", "from": "20", "to": "10"]) == nil)
        #expect(FlushTask(attributes: ["segment": "nope", "from": "0", "to": "1"]) == nil)
        #expect(try WriteBack.journalStream(node: "127.0.0.1:9090").description == "_eddy/queue-127.0.0.1-9090")
    }
}
