// Contract types shared by the store, the wire protocol and clients (like Pravega's contracts module).

/// What an append returns: where the batch landed. Events of a batch are contiguous, so the pointer of
/// event i is `firstOffset` plus the sizes of the frames before it.
public struct AppendAck: Hashable, Sendable {
    /// The segment written.
    public let segment: SegmentID
    /// Where the batch's first frame starts.
    public let firstOffset: UInt64
    /// How many events the batch held.
    public let eventCount: UInt32
    /// True when the store had the batch already (a retry) and answered with the original position.
    public let duplicate: Bool

    /// Creates an acknowledgement.
    public init(segment: SegmentID, firstOffset: UInt64, eventCount: UInt32, duplicate: Bool) {
        self.segment = segment
        self.firstOffset = firstOffset
        self.eventCount = eventCount
        self.duplicate = duplicate
    }

    /// The pointers of the batch's events, given the size of each frame in order.
    public func pointers(frameSizes: [Int]) -> [EventPointer] {
        var offset = firstOffset
        return frameSizes.map { size in
            defer { offset += UInt64(size) }
            return EventPointer(segment: segment, offset: offset, length: UInt32(size))
        }
    }
}

/// A segment's public state.
public struct SegmentInfo: Hashable, Sendable {
    /// The segment.
    public let segment: SegmentID
    /// The truncation point: the lowest offset still readable.
    public let startOffset: UInt64
    /// The segment's length: the offset one past its last durable byte.
    public let length: UInt64
    /// Whether the segment is sealed.
    public let sealed: Bool
    /// Which stream of this name the segment belongs to: the store's journal sequence number (LSN) of the stream's
    /// creation, so a stream deleted and created again under the same name has a new one. 0 when unknown (a
    /// stream created before the store recorded it).
    public let incarnation: UInt64

    /// Creates segment info.
    public init(segment: SegmentID, startOffset: UInt64, length: UInt64, sealed: Bool, incarnation: UInt64 = 0) {
        self.segment = segment
        self.startOffset = startOffset
        self.length = length
        self.sealed = sealed
        self.incarnation = incarnation
    }
}

/// A stream's public state.
public struct StreamInfo: Hashable, Sendable {
    /// The stream.
    public let name: StreamName
    /// Its segments in number order.
    public let segments: [SegmentInfo]

    /// Creates stream info.
    public init(name: StreamName, segments: [SegmentInfo]) {
        self.name = name
        self.segments = segments
    }
}
