/// A block: the cache's unit, bytes `[index * size, (index + 1) * size)` of one segment.
///
/// Blocks are immutable once full; the last block of an open segment only grows, so a cached prefix of a
/// block is always valid.
public struct BlockID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The segment the block belongs to.
    public let segment: SegmentID
    /// The block's index in the segment, counted from 0.
    public let index: UInt64

    /// Creates a block identifier.
    public init(segment: SegmentID, index: UInt64) {
        self.segment = segment
        self.index = index
    }

    public var description: String { "\(segment)#\(index)" }

    public static func < (lhs: BlockID, rhs: BlockID) -> Bool {
        (lhs.segment, lhs.index) < (rhs.segment, rhs.index)
    }
}

/// BlockGeometry does the arithmetic between byte offsets and blocks for one block size.
public struct BlockGeometry: Hashable, Sendable {
    /// The default block size, 1 MiB.
    public static let defaultBlockSize: UInt64 = 1 << 20

    /// Bytes per block; always greater than 0.
    public let blockSize: UInt64

    /// Creates a geometry.
    /// - Throws: ``EddyError/Code/invalidArgument`` when `blockSize` is 0.
    public init(blockSize: UInt64 = BlockGeometry.defaultBlockSize) throws(EddyError) {
        guard blockSize > 0 else { throw EddyError(.invalidArgument, "block size must be greater than 0") }
        self.blockSize = blockSize
    }

    /// The index of the block that holds byte `offset`.
    public func index(containing offset: UInt64) -> UInt64 { offset / blockSize }

    /// The byte range a block covers.
    public func range(ofBlock index: UInt64) -> Range<UInt64> {
        (index * blockSize)..<((index + 1) * blockSize)
    }

    /// The indices of the blocks that hold any byte of `range`; empty for an empty range.
    public func blocks(covering range: Range<UInt64>) -> Range<UInt64> {
        guard !range.isEmpty else { return 0..<0 }
        return index(containing: range.lowerBound)..<(index(containing: range.upperBound - 1) + 1)
    }

    /// Whether a block is full in a segment of `length` bytes (and therefore immutable).
    public func isFull(block index: UInt64, segmentLength length: UInt64) -> Bool {
        range(ofBlock: index).upperBound <= length
    }
}
