/// EventPointer names one event: its segment, the byte offset where its frame starts and the frame's size.
///
/// Text form: `scope/stream/00000003/00000000000000123456+142`: segment number zero-padded to 8 digits,
/// offset to 20 digits (so string order is offset order within a stream), then `+` and the frame size.
/// The parser also takes the form without `+SIZE` (size 0, "unknown"), which is enough to resume a reader:
/// it reads the frame at the offset to learn its size.
public struct EventPointer: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The segment that holds the event.
    public let segment: SegmentID
    /// The byte offset of the event's frame in the segment.
    public let offset: UInt64
    /// The size of the frame in bytes; 0 when the text form did not carry it.
    public let length: UInt32

    /// Creates a pointer.
    public init(segment: SegmentID, offset: UInt64, length: UInt32) {
        self.segment = segment
        self.offset = offset
        self.length = length
    }

    /// The offset just past the event, where the next event starts.
    /// - Precondition: the length is known (not 0).
    public var nextOffset: UInt64 { offset + UInt64(length) }

    public var description: String {
        "\(segment)/\(Decimal.padded(offset, width: 20))+\(length)"
    }

    /// Parses `scope/stream/SEGMENT/OFFSET[+LENGTH]`.
    /// - Throws: ``EddyError/Code/invalidArgument`` for text of another form, or ``EddyError/Code/invalidName``.
    public init(parsing text: String) throws(EddyError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, let number = UInt32(parts[2]) else {
            throw EddyError(.invalidArgument, "invalid event pointer '\(text)': expected SCOPE/STREAM/SEGMENT/OFFSET")
        }
        let tail = parts[3].split(separator: "+", omittingEmptySubsequences: false)
        guard (1...2).contains(tail.count), let offset = UInt64(tail[0]) else {
            throw EddyError(.invalidArgument, "invalid event pointer '\(text)': bad offset '\(parts[3])'")
        }
        var length: UInt32 = 0
        if tail.count == 2 {
            guard let l = UInt32(tail[1]) else {
                throw EddyError(.invalidArgument, "invalid event pointer '\(text)': bad length '\(tail[1])'")
            }
            length = l
        }
        let stream = try StreamName(scope: String(parts[0]), stream: String(parts[1]))
        self.init(segment: SegmentID(stream: stream, number: number), offset: offset, length: length)
    }

    public static func < (lhs: EventPointer, rhs: EventPointer) -> Bool {
        (lhs.segment, lhs.offset) < (rhs.segment, rhs.offset)
    }
}
