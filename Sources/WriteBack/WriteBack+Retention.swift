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

/// Retention: truncating the store to what is flushed and allowed, and the flushed starts segments report.
extension WriteBack {
    // MARK: - Retention

    /// Truncates owned segments in the store to what retention allows: never past the manifest's last event
    /// boundary (what is flushed), and only as far as the byte or time limit asks.
    package func applyRetention(core: any WriteBackHost) async {
        guard configuration.retainBytes != nil || configuration.retainSeconds != nil else { return }
        let now = WallClock.milliseconds()
        for segment in core.ownedSegmentIDs() where segment.stream.scope != StreamName.internalScope {
            guard let state = segments.withLock({ $0[segment] }), let manifest = state.saved else { continue }
            var candidates = state.history.map(\.boundary) + [manifest.eventBoundary]
            var limit = manifest.eventBoundary
            if let bytes = configuration.retainBytes {
                let keepFrom = state.length > bytes ? state.length - bytes : 0
                limit = min(limit, keepFrom)
            }
            if let seconds = configuration.retainSeconds {
                let age = Int64(seconds.inSeconds * 1000)
                let old = state.history.filter { now - $0.at >= age }.map(\.boundary).max() ?? 0
                limit = min(limit, old)
            }
            candidates = candidates.filter { $0 <= limit }
            guard let point = candidates.max(), point > state.startOffset else { continue }
            let r = await core.handleAsClient(.truncate(segment, offset: point))
            if case .error(let error) = r {
                logger.warning("retention truncate failed", metadata: ["segment": "\(segment)", "error": "\(error)"])
            } else {
                truncations.add(1, ordering: .relaxed)
                segments.withLock { $0[segment]?.startOffset = point }
            }
        }
    }

    /// Refuses a truncation of `segment` past what is flushed: retention and `eddy truncate` drop only what object
    /// storage holds.
    package func checkTruncation(_ segment: SegmentID, at offset: UInt64) async throws(EddyError) {
        let flushed: UInt64
        do {
            flushed = try await savedManifest(of: segment).flushed
        } catch {
            throw EddyError(.unavailable, "cannot read the flush manifest of \(segment): \(error)")
        }
        guard offset <= flushed else {
            throw EddyError(
                .invalidArgument,
                "cannot truncate \(segment) at \(offset): only \(flushed) bytes are flushed to object storage, and "
                    + "write-back never lets the store drop unflushed bytes")
        }
    }

    /// A store answer with each segment's start moved down to what object storage holds: reads below the store's
    /// start are served from there, so clients see the segment from its first flushed byte.
    package func showingFlushedStarts(_ response: Response) async -> Response {
        switch response {
        case .segmentInfo(let info): return .segmentInfo(await flushedStart(info))
        case .streamInfo(let stream): return .streamInfo(await flushedStarts(stream))
        case .streamList(let streams):
            var out: [StreamInfo] = []
            for stream in streams { out.append(await flushedStarts(stream)) }
            return .streamList(out)
        default: return response
        }
    }

    package func flushedStarts(_ stream: StreamInfo) async -> StreamInfo {
        var segments: [SegmentInfo] = []
        for info in stream.segments { segments.append(await flushedStart(info)) }
        return StreamInfo(name: stream.name, segments: segments)
    }

    package func flushedStart(_ info: SegmentInfo) async -> SegmentInfo {
        guard info.startOffset > 0, info.segment.stream.scope != StreamName.internalScope,
            let manifest = try? await manifest(of: info.segment), manifest.objects > 0,
            manifest.first < info.startOffset
        else { return info }
        return SegmentInfo(
            segment: info.segment, startOffset: manifest.first, length: info.length, sealed: info.sealed,
            incarnation: info.incarnation)
    }

    /// The flushed watermark of `segment` as known here (nil when its manifest was never read).
    package func flushed(_ segment: SegmentID) -> UInt64? { segments.withLock { $0[segment]?.manifest?.flushed } }

    /// Bytes appended but not yet flushed, summed over the segments this node tracks.
    package var flushLag: Int {
        segments.withLock { s in
            s.values.reduce(0) { $0 + Int($1.length - min($1.length, $1.manifest?.flushed ?? 0)) }
        }
    }

    /// Block `index` of `segment` when the owner cache holds all of it (counted as a flush read from the cache).
    func fullCachedBlock(_ segment: SegmentID, _ index: UInt64) throws -> ByteBuffer? {
        guard let cached = try cache.peek(BlockID(segment: segment, index: index)),
            cached.readableBytes == Int(geometry.blockSize)
        else { return nil }
        cachedFlushReads.add(1, ordering: .relaxed)
        return cached
    }

    /// Unflushed bytes per segment this node tracks.
    package func lags() -> [SegmentID: UInt64] {
        segments.withLock { s in s.mapValues { $0.length - min($0.length, $0.manifest?.flushed ?? 0) } }
    }

    /// Unflushed bytes of one segment.
    package func lag(_ segment: SegmentID) -> UInt64 {
        segments.withLock { s in
            guard let state = s[segment] else { return 0 }
            return state.length - min(state.length, state.manifest?.flushed ?? 0)
        }
    }

    package func metrics() -> QueueMetrics? { queue.withLock { $0 }?.metrics() }
}
