import CacheCore
import Foundation
import StreamModel
import Synchronization

/// ReaderState is what the node knows of one reader (a client connection): the last block it read in each
/// segment, whether its reads there are sequential (a catch-up scan), and whether it reads at the tail.
public final class ReaderState: Sendable {
    struct Position {
        var block: UInt64
        var sequential: Bool
        var tail: Bool
    }

    /// The reader's number on this node.
    public let id: Int
    private let positions = Mutex<[SegmentID: Position]>([:])

    /// Creates the state of reader `id`.
    public init(id: Int) { self.id = id }

    /// Notes a lookup of `block` of `segment`.
    /// - Returns: whether it is a tail lookup of the block the reader's last lookup there was a tail lookup of
    ///   (a follower reading the growing tail block piece by piece).
    @discardableResult
    func record(_ segment: SegmentID, block: UInt64, tail: Bool) -> Bool {
        positions.withLock { p in
            if let old = p[segment] {
                let sequential = block == old.block + 1 || (block == old.block && old.sequential)
                p[segment] = Position(block: block, sequential: sequential, tail: tail)
                return tail && old.tail && old.block == block
            } else {
                p[segment] = Position(block: block, sequential: false, tail: tail)
                return false
            }
        }
    }

    func isSequential(_ segment: SegmentID) -> Bool {
        positions.withLock { $0[segment]?.sequential ?? false }
    }
}
