import CacheCore
import Coalescing
import Foundation
import HashRing
import Logging
import Membership
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBack

/// Reads of segments another node owns: forwarded to the owner, one shared forward per owner, offset and wait.
extension NodeCore {
    // MARK: - Not the owner

    func nonOwnerRead(
        _ segment: SegmentID, owner: String, offset: UInt64, maxBytes: Int, wait: Duration
    ) async throws(EddyError) -> ReadAnswer {
        let index = geometry.index(containing: offset)
        let id = BlockID(segment: segment, index: index)
        let range = geometry.range(ofBlock: index)
        let hint = hints.withLock { $0[segment] }
        if let near, let hint, let block = try near.buffer(id) {
            counters.nearHits.add(1, ordering: .relaxed)
            return Self.slice(block, blockStart: range.lowerBound, offset: offset, maxBytes: maxBytes, info: hint)
        }
        if near != nil, let hint, geometry.isFull(block: index, segmentLength: hint.length), offset >= hint.startOffset
        {
            // A full block: fetch all of it once for every local reader, and keep it in the near cache.
            let a = try await forwardRead(
                ForwardKey(
                    owner: owner, segment: segment, offset: range.lowerBound, maxBytes: UInt32(geometry.blockSize),
                    waitMilliseconds: 0))
            if a.count == Int(geometry.blockSize), let received = a.slices.first {
                let data = near?.admit(id, buffer: received) ?? received
                return Self.slice(data, blockStart: range.lowerBound, offset: offset, maxBytes: maxBytes, info: a.info)
            }
        }
        let ms = UInt32(clamping: Int64(wait.inSeconds * 1000))
        return try await forwardRead(
            ForwardKey(owner: owner, segment: segment, offset: offset, maxBytes: UInt32(maxBytes), waitMilliseconds: ms)
        )
    }

    static func slice(_ block: ByteBuffer, blockStart: UInt64, offset: UInt64, maxBytes: Int, info: SegmentInfo)
        -> ReadAnswer
    {
        let skip = Int(offset - blockStart)
        let take = max(0, min(maxBytes, block.readableBytes - skip))
        return ReadAnswer(
            info: info, offset: offset,
            slices: take > 0 ? [block.getSlice(at: block.readerIndex + skip, length: take)!] : [])
    }

    /// Forwards a read to its owner; identical forwards of local readers share one request.
    func forwardRead(_ key: ForwardKey) async throws(EddyError) -> ReadAnswer {
        let request = Request.read(
            segment: key.segment, offset: key.offset, maxBytes: key.maxBytes, waitMilliseconds: key.waitMilliseconds)
        let timeout = configuration.requestTimeout + .milliseconds(Int64(key.waitMilliseconds))
        let response: Response
        do {
            let (r, joined) = try await forwards.run(key) {
                self.counters.forwards.add(1, ordering: .relaxed)
                return try await self.forward(request, to: key.owner, timeout: timeout)
            }
            if joined { counters.coalescedForwards.add(1, ordering: .relaxed) }
            response = r
        } catch {
            throw Self.typed(error)
        }
        guard case .readResult(let offset, let info, let data) = response else {
            throw EddyError(.malformedFrame, "\(key.owner) answered a read with \(response)")
        }
        hints.withLock { h in
            if let old = h[key.segment], old.length > info.length { return }
            h[key.segment] = info
        }
        return ReadAnswer(info: info, offset: offset, slices: data.readableBytes > 0 ? [data] : [])
    }
}
