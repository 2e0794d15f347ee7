import CacheCore
import EddyTLS
import Foundation
import Logging
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBackQueue

/// Cold reads: blocks the store no longer holds, served back from their objects.
extension WriteBack {
    // MARK: - Cold reads

    /// Block `index` of `segment` from object storage: the bytes of its objects, decoded, checked and joined.
    /// Returns the bytes from the block's start (all of the block when it was flushed whole).
    ///
    /// An object holds at most ``WriteBackConfiguration/maximumObjectBlocks`` blocks, so the one holding the
    /// block's first byte starts less than that many blocks before it: one listing from there finds it and the
    /// objects after it. Decoded objects are kept for a few seconds (``coldObject(_:)``), so reading the blocks of
    /// one object in turn fetches it once.
    package func coldBlock(_ segment: SegmentID, index: UInt64) async throws(EddyError) -> ByteBuffer {
        coldReads.add(1, ordering: .relaxed)
        let range = geometry.range(ofBlock: index)
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        let window = UInt64(WriteBackConfiguration.maximumObjectBlocks) * geometry.blockSize
        do {
            // The last object starting at or before the block, then those starting inside it.
            var holding: [String] = []
            var after =
                range.lowerBound < window
                ? nil : BlockObject.key(prefix: prefix, segment: segment, start: range.lowerBound - window)
            listing: while true {
                let page = try await objects.list(prefix: folder, startAfter: after, continuation: nil, limit: 1000)
                for info in page.objects {
                    guard let start = BlockObject.start(ofKey: info.key) else { continue }
                    if start >= range.upperBound { break listing }
                    if start <= range.lowerBound { holding.removeAll() }
                    holding.append(info.key)
                }
                guard page.continuation != nil, let last = page.objects.last?.key else { break }
                after = last
            }
            var out = ByteBufferAllocator().buffer(capacity: Int(geometry.blockSize))
            var at = range.lowerBound
            for key in holding {
                let object = try await coldObject(key)
                if object.end <= at { continue }  // ends before the block (the next one shows whether a gap follows)
                guard object.start <= at else {
                    throw EddyError(.corruptData, "objects of \(segment) skip from \(at) to \(object.start)")
                }
                let upTo = min(object.end, range.upperBound)
                out.writeImmutableBuffer(
                    object.bytes.getSlice(
                        at: object.bytes.readerIndex + Int(at - object.start), length: Int(upTo - at))!)
                at = upTo
                if at == range.upperBound { break }
            }
            guard at > range.lowerBound else {
                throw EddyError(
                    .truncated, "offset \(range.lowerBound) of \(segment) is neither in the store nor flushed")
            }
            return out
        } catch let error as EddyError {
            throw error
        } catch {
            throw EddyError(.unavailable, "object store: \(error)")
        }
    }

    /// How long a decoded object is kept for the cold reads of its other blocks.
    package static let coldObjectLifetime: Int64 = 5_000
    /// At most this many decoded objects are kept.
    package static let coldObjectLimit = 4

    /// The object under `key`, decoded and checked: fetched once for concurrent and close-following cold reads of
    /// its blocks (read-ahead asks for the next blocks at once), kept ``coldObjectLifetime`` milliseconds.
    package func coldObject(_ key: String) async throws -> BlockObject {
        let now = WallClock.milliseconds()
        let fetch = coldObjects.withLock { kept -> Task<BlockObject, any Error> in
            kept.removeAll { now - $0.at > Self.coldObjectLifetime }
            if let found = kept.first(where: { $0.key == key }) { return found.fetch }
            let objects = self.objects
            coldObjectGets.add(1, ordering: .relaxed)
            let fetch = Task { try BlockObject.decode(try await objects.get(key), key: key) }
            kept.append((key, now, fetch))
            if kept.count > Self.coldObjectLimit { kept.removeFirst() }
            return fetch
        }
        do {
            return try await fetch.value
        } catch {
            coldObjects.withLock { kept in kept.removeAll { $0.key == key } }
            throw error
        }
    }
}
