/// BlockKey packs a block's (segment ordinal, block index) into the 64-bit ID policies work with:
/// the segment ordinal in the top 24 bits, the block index in the low 40 bits. The cache assigns segment
/// ordinals; a block trace (`time,segment,block,size`) carries them directly. The stream-aware policy unpacks
/// them to know which blocks are neighbours in one segment.
public struct BlockKey: Hashable, Sendable {
    /// Bits of the block index.
    public static let blockBits = 40
    /// The largest segment ordinal.
    public static let maxSegment: UInt32 = (1 << 24) - 1
    /// The largest block index.
    public static let maxBlock: UInt64 = (1 << 40) - 1

    /// The packed value.
    public let rawValue: UInt64

    /// Packs a segment ordinal and a block index.
    /// - Precondition: both within range.
    public init(segment: UInt32, block: UInt64) {
        precondition(segment <= Self.maxSegment && block <= Self.maxBlock, "block key out of range")
        rawValue = UInt64(segment) << UInt64(Self.blockBits) | block
    }

    /// Wraps a packed value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The segment ordinal.
    public var segment: UInt32 { UInt32(truncatingIfNeeded: rawValue >> UInt64(Self.blockBits)) }
    /// The block index within the segment.
    public var block: UInt64 { rawValue & Self.maxBlock }
}
