import EddyClient
import EddyTestSupport
import NIOCore
import Testing

@testable import StreamModel

@Suite("segment cursor")
struct SegmentCursorTests {
    let segment = SegmentID(stream: try! StreamName(parsing: "cursor/s"), number: 0)

    @Test("bytes cut at any point come out as whole events, each once, with contiguous pointers")
    func everySplit() throws {
        let payloads = (0..<6).map { "event \($0) " + String(repeating: "p", count: 7 * $0) }
        let all = try frames(payloads)
        let bytes = Array(all.readableBytesView)
        for first in 0...bytes.count {
            for second in first...bytes.count
            where second == first || second == bytes.count || (second - first) % 5 == 0 {
                var cursor = SegmentCursor(segment: segment, offset: 100)
                var got: [PointedEvent] = []
                for (lo, hi) in [(0, first), (first, second), (second, bytes.count)] {
                    got += try cursor.take(ByteBuffer(bytes: bytes[lo..<hi]))
                }
                #expect(
                    got.map { String(decoding: $0.event.payload, as: UTF8.self) } == payloads,
                    "split \(first) \(second)")
                var next: UInt64 = 100
                for e in got {
                    #expect(e.pointer.offset == next)
                    next += UInt64(e.pointer.length)
                }
                #expect(cursor.pendingOffset == 100 + UInt64(bytes.count) && cursor.offset == cursor.pendingOffset)
            }
        }
    }

    @Test("a corrupt event is corruptData naming its offset; the cursor stays at the last boundary it handed out")
    func corrupt() throws {
        var bytes = Array(try frames(["good", "bad!", "after"]).readableBytesView)
        let good = try #require(
            bytes.withUnsafeBytes { b -> Int? in
                if case .frame(let size) = EventFrame.check(b, at: 0) { return size }
                return nil
            })
        bytes[good + 20] ^= 0xFF  // inside the second event's payload: its CRC fails
        for split in [0, good, good + 3] {
            var cursor = SegmentCursor(segment: segment, offset: 0)
            let front = try cursor.take(ByteBuffer(bytes: bytes[0..<split]))
            do {
                _ = try cursor.take(ByteBuffer(bytes: bytes[split...]))
                Issue.record("split \(split): a corrupt event was handed out")
            } catch {
                #expect(error.code == .corruptData && "\(error)".contains("offset \(good)"), "\(error)")
            }
            #expect(cursor.pendingOffset == UInt64(front.count == 1 ? good : 0), "split \(split)")
            cursor.rewind()
            #expect(cursor.offset == cursor.pendingOffset)
        }
    }
}
