import Testing

@testable import StreamModel

@Suite("StreamModel")
struct StreamModelTests {
    @Test("CRC32C matches the published check value and RFC 3720 vectors")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0..<32)) == 0x46DD_794E)
        // Continuing over pieces equals the whole, at every split.
        let bytes = (0..<100).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        for split in 0...bytes.count {
            #expect(
                CRC32C.checksum(bytes[split...], continuing: CRC32C.checksum(bytes[..<split])) == CRC32C.checksum(bytes)
            )
        }
    }

    @Test("the CPU's CRC32C instruction and the portable tables agree at every length and alignment")
    func crcHardwareMatchesTables() {
        var random = SeededRandom(seed: 7)
        let bytes = (0..<100_000).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        bytes.withUnsafeBytes { all in
            for start in 0..<9 {
                // Past 767 and 24,575 bytes the hardware path checksums three lanes side by side and joins them.
                for length in [0, 1, 7, 8, 9, 15, 16, 31, 33, 100, 767, 768, 769, 1000, 4000, 24_575, 24_576, 99_000] {
                    let piece = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(
                        CRC32C.checksum(piece, continuing: 0x1234) == CRC32C.portableChecksum(piece, continuing: 0x1234)
                    )
                }
            }
        }
        #expect(CRC32C.portableChecksum(UnsafeRawBufferPointer(start: nil, count: 0)) == 0)
        #if arch(x86_64)
            #expect(CRC32C.hardware, "x86-64 machines of this kind have SSE 4.2")
        #endif
    }

    @Test(
        "stream names: valid ones parse, invalid ones are refused with a clear message",
        arguments: [
            ("scope/stream", true), ("a.b_c-D9/x", true), (String(repeating: "a", count: 64) + "/s", true),
            (String(repeating: "a", count: 65) + "/s", false), ("scope", false), ("a/b/c", false), ("/s", false),
            ("s/", false), ("sc ope/s", false), ("s/ü", false), ("../etc", false), ("s/.", false),
        ])
    func names(text: String, valid: Bool) {
        do {
            let name = try StreamName(parsing: text)
            #expect(valid, "accepted \(text)")
            #expect(name.description == text)
        } catch {
            #expect(!valid, "refused \(text): \(error)")
            #expect(error.code == .invalidName)
            #expect(error.message.contains("invalid"))
        }
    }

    @Test("routing keys map stably to segments and spread evenly")
    func routing() {
        // Fixed values: the mapping is part of the protocol and must never change.
        #expect(RoutingKey.fnv1a64("") == 0xcbf2_9ce4_8422_2325)
        #expect(RoutingKey.fnv1a64("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(RoutingKey.jump(0, buckets: 10) == 0)
        var counts = [Int](repeating: 0, count: 8)
        for i in 0..<8000 { counts[Int(RoutingKey.segment(for: "user-\(i)", segmentCount: 8))] += 1 }
        #expect(counts.allSatisfy { (800...1200).contains($0) }, "uneven spread \(counts)")
        // Growing from 8 to 9 segments moves about 1/9 of the keys, and only to the new segment.
        var moved = 0
        for i in 0..<9000 {
            let a = RoutingKey.segment(for: "k\(i)", segmentCount: 8)
            let b = RoutingKey.segment(for: "k\(i)", segmentCount: 9)
            if a != b {
                moved += 1
                #expect(b == 8)
            }
        }
        #expect((700...1300).contains(moved))
    }

    @Test("event frames round-trip and any flipped byte is detected")
    func frames() throws {
        let event = Event(routingKey: "key-1", timestamp: 1_700_000_000_000_000, payload: Array("payload".utf8))
        let bytes = try EventFrame.encode(event)
        #expect(bytes.count == EventFrame.frameSize(keyLength: 5, payloadLength: 7))
        let (decoded, size) = try bytes.withBytes { (b) throws(EddyError) in try EventFrame.decode(b, at: 0) }
        #expect(decoded == event)
        #expect(size == bytes.count)
        let noKey = Event(timestamp: -5, payload: [])
        #expect(
            try EventFrame.encode(noKey).withBytes { (b) throws(EddyError) in try EventFrame.decode(b, at: 0).0 }
                == noKey)
        for i in 0..<bytes.count {
            var bad = bytes
            bad[i] ^= 0x10
            let result = bad.withUnsafeBytes { EventFrame.check($0, at: 0) }
            #expect(result != .frame(size: bytes.count), "flip at \(i) went unnoticed")
        }
        for cut in 0..<bytes.count {
            let result = Array(bytes.prefix(cut)).withUnsafeBytes { EventFrame.check($0, at: 0) }
            if case .frame = result { Issue.record("a frame cut at \(cut) passed") }
        }
        #expect(throws: EddyError.self) {
            try EventFrame.encode(
                Event(timestamp: 0, payload: [UInt8](repeating: 0, count: EventFrame.maxPayloadSize + 1)))
        }
    }

    @Test("event pointers: sortable text form that round-trips")
    func pointers() throws {
        let segment = SegmentID(stream: try StreamName(parsing: "scope/stream"), number: 3)
        let p = EventPointer(segment: segment, offset: 123_456, length: 142)
        #expect(p.description == "scope/stream/00000003/00000000000000123456+142")
        #expect(try EventPointer(parsing: p.description) == p)
        #expect(try EventPointer(parsing: "scope/stream/00000003/00000000000000123456").length == 0)
        let offsets: [UInt64] = [0, 9, 10, 99, 100, 123_456, 1 << 40]
        let texts = offsets.map { EventPointer(segment: segment, offset: $0, length: 7).description }
        #expect(texts == texts.sorted())
        for bad in ["scope/stream/3", "scope/stream/x/1", "scope/stream/1/-4", "scope/stream/1/4+x", "a b/s/1/1"] {
            #expect(throws: EddyError.self) { try EventPointer(parsing: bad) }
        }
    }

    @Test("block arithmetic")
    func blocks() throws {
        let g = try BlockGeometry(blockSize: 1 << 20)
        #expect(g.index(containing: 0) == 0)
        #expect(g.index(containing: (1 << 20) - 1) == 0)
        #expect(g.index(containing: 1 << 20) == 1)
        #expect(g.range(ofBlock: 2) == (2 << 20)..<(3 << 20))
        #expect(g.blocks(covering: 10..<(2 << 20)) == 0..<2)
        #expect(g.blocks(covering: 10..<((2 << 20) + 1)) == 0..<3)
        #expect(g.blocks(covering: 5..<5).isEmpty)
        #expect(g.isFull(block: 0, segmentLength: 1 << 20))
        #expect(!g.isFull(block: 1, segmentLength: (1 << 20) + 5))
        #expect(throws: EddyError.self) { try BlockGeometry(blockSize: 0) }
    }
}
