import CacheCore
import Foundation
import StreamModel
import Synchronization

/// StoreReadLedger records which bytes of which blocks the node read from the store, so it can say how many
/// distinct blocks and bytes it read and whether it read any byte twice (read amplification).
///
/// It remembers the ranges of the most recent `limit` blocks (a million by default, about 100 MB at most); a
/// block forgotten and read again counts as new, so on a node that has read more blocks than that the figures
/// describe the recent past.
final class StoreReadLedger: Sendable {
    struct State {
        var requests = 0
        var bytes: Int64 = 0
        /// Per block, the byte ranges read, merged.
        var ranges: [BlockID: [Range<UInt64>]] = [:]
        /// Blocks in the order they were first recorded, to forget the oldest past the limit.
        var order: [BlockID] = []
        var orderStart = 0
        var blocksSeen = 0
        var distinctBytes: Int64 = 0
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int = 1 << 20) { self.limit = limit }

    /// Records `count` bytes of `segment` read from `offset`; `request` says they answered a read request (false:
    /// a regional node's upstream subscription pushed them).
    func record(
        _ segment: SegmentID, from offset: UInt64, count: Int, geometry: BlockGeometry, request: Bool = true
    ) {
        state.withLock { s in
            if request { s.requests += 1 }
            s.bytes += Int64(count)
            guard count > 0 else { return }
            let range = offset..<(offset + UInt64(count))
            for index in geometry.blocks(covering: range) {
                let block = geometry.range(ofBlock: index)
                let part = max(block.lowerBound, range.lowerBound)..<min(block.upperBound, range.upperBound)
                let id = BlockID(segment: segment, index: index)
                if s.ranges[id] == nil {
                    s.blocksSeen += 1
                    s.order.append(id)
                    if s.order.count - s.orderStart > limit {
                        s.ranges.removeValue(forKey: s.order[s.orderStart])
                        s.orderStart += 1
                        if s.orderStart >= limit {
                            s.order.removeFirst(s.orderStart)
                            s.orderStart = 0
                        }
                    }
                }
                var list = s.ranges[id] ?? []
                let before = list.reduce(UInt64(0)) { $0 + UInt64($1.count) }
                list.append(part)
                list.sort { $0.lowerBound < $1.lowerBound }
                var merged: [Range<UInt64>] = []
                for r in list {
                    if let last = merged.last, r.lowerBound <= last.upperBound {
                        merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
                    } else {
                        merged.append(r)
                    }
                }
                s.ranges[id] = merged
                s.distinctBytes += Int64(merged.reduce(UInt64(0)) { $0 + UInt64($1.count) } - before)
            }
        }
    }

    /// Requests, bytes, distinct blocks and distinct bytes read so far.
    var summary: (requests: Int, bytes: Int64, blocks: Int, distinctBytes: Int64) {
        state.withLock { ($0.requests, $0.bytes, $0.blocksSeen, $0.distinctBytes) }
    }
}
