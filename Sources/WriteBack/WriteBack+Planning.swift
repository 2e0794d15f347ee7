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

/// Planning: which ranges of which owned segments are due, and the manifests they are planned from.
extension WriteBack {
    // MARK: - Planning

    /// An append landed at the owner: remember the segment's length and plan a flush when a block filled.
    package func appended(_ segment: SegmentID, length: UInt64) {
        let now = WallClock.milliseconds()
        let plan = segments.withLock { s -> Bool in
            var state = s[segment, default: FlushState()]
            let before = state.length
            state.length = max(state.length, length)
            state.lastChange = now
            s[segment] = state
            return geometry.index(containing: max(before, 1) - 1) != geometry.index(containing: max(length, 1) - 1)
        }
        if plan { Task { await self.plan(segment) } }
    }

    /// Looks at every segment this node owns (the store's length against the manifest) and queues what is due.
    /// One `listStreams` gives every segment's state.
    package func scan(core: any WriteBackHost) async {
        let owned = core.ownedSegmentIDs().filter { $0.stream.scope != StreamName.internalScope }
        guard !owned.isEmpty || !segments.withLock({ $0.isEmpty }) else { return }
        let infos: [SegmentID: SegmentInfo]
        do {
            guard case .streamList(let streams) = try await store.send(.listStreams, timeout: node.requestTimeout)
            else { return }
            infos = Dictionary(streams.flatMap(\.segments).map { ($0.segment, $0) }) { first, _ in first }
        } catch {
            logger.debug("flush scan: \(error)")
            return
        }
        let now = WallClock.milliseconds()
        // Segments of deleted streams have nothing left to flush (and no lag to report), and segments another node
        // owns now are its to flush: what this node knew of them goes (their lag would stay on its books, and its
        // manifest would be stale when the segment comes back; it is loaded again then).
        let listed = Set(infos.keys.map(\.stream))
        let ownedNow = Set(owned)
        segments.withLock { s in
            for (segment, state) in s
            where !state.pending && !state.saving && (!listed.contains(segment.stream) || !ownedNow.contains(segment)) {
                s[segment] = nil
            }
        }
        for segment in owned {
            guard let info = infos[segment] else { continue }
            let recreated = segments.withLock { s -> Bool in
                var state = s[segment, default: FlushState()]
                if info.length != state.length || info.sealed != state.sealed || state.lastChange == 0 {
                    state.lastChange = now
                }
                let recreated = state.incarnation != 0 && state.incarnation != info.incarnation
                if recreated { state.matchedTo = 0 }  // a comparison under way was with another stream
                state.incarnation = info.incarnation
                if let known = state.manifest?.incarnation ?? state.saved?.incarnation, known != info.incarnation,
                    !state.pending, !state.saving
                {
                    // The stream was deleted and created again under its name: what this node knew of its flushing
                    // was the earlier stream's. The next manifest load compares the earlier objects with the new
                    // stream's bytes (loadManifest).
                    state = FlushState(incarnation: info.incarnation, lastChange: now)
                }
                state.length = info.length
                state.sealed = info.sealed
                state.startOffset = info.startOffset
                s[segment] = state
                return recreated
            }
            // Blocks cached of the earlier stream (a delete straight at the store tells no node) must not be flushed
            // or compared as the new one's.
            if recreated { cache.removeStream(segment.stream) }
            await plan(segment)
            // A deferred manifest save that failed is tried again here.
            try? await persistManifest(segment)
        }
    }

    /// Queues the next flush task of `segment` when none is queued and one is due.
    package func plan(_ segment: SegmentID) async {
        guard let queue = queue.withLock({ $0 }) else { return }
        guard let manifest = try? await manifest(of: segment) else { return }
        let now = WallClock.milliseconds()
        let task = segments.withLock { s -> (FlushTask, QoSClass)? in
            // Not on an earlier stream's manifest: the scan has seen the stream created again and drops it.
            guard var state = s[segment], !state.pending,
                state.incarnation == 0 || manifest.incarnation == state.incarnation
            else { return nil }
            let from = manifest.flushed
            guard state.length > from else { return nil }
            let blockEnd = geometry.range(ofBlock: geometry.index(containing: from)).upperBound
            let idle = Int64(configuration.flushIdle.inSeconds * 1000)
            let choice: (UInt64, QoSClass)?
            if state.length >= blockEnd {
                let objectBytes = UInt64(configuration.clampedObjectBlocks) * geometry.blockSize
                // The first object ends where its last block does (`from` may be inside a block, after a flushed
                // tail); the full blocks end where the tail block starts.
                let firstObjectEnd = blockEnd + objectBytes - geometry.blockSize
                let fullEnd = max(
                    blockEnd, geometry.range(ofBlock: geometry.index(containing: state.length)).lowerBound)
                let cap = firstObjectEnd + UInt64(max(configuration.objectsPerTask, 1) - 1) * objectBytes
                if state.fullSince == 0 { state.fullSince = now }
                if fullEnd >= firstObjectEnd {
                    // Whole objects only, up to objectsPerTask: a segment that filled blocks faster than they were
                    // flushed sends one message for them, not one each.
                    let whole = firstObjectEnd + (fullEnd - firstObjectEnd) / objectBytes * objectBytes
                    choice = (min(whole, cap), .standard)
                } else if state.sealed || now - state.fullSince >= idle || now - state.lastChange >= idle {
                    // The rest of the object is not coming soon: what is full goes now.
                    choice = (min(fullEnd, cap), .standard)
                } else {
                    choice = nil
                }
                if let (to, _) = choice { state.fullSince = to >= fullEnd ? 0 : now }
                s[segment] = state
            } else if state.sealed {
                choice = (state.length, .critical)
            } else if now - state.lastChange >= idle {
                choice = (state.length, .bulk)
            } else {
                choice = nil
            }
            guard let (to, qos) = choice else { return nil }
            state.pending = true
            s[segment] = state
            return (FlushTask(segment: segment, from: from, to: to, incarnation: state.incarnation), qos)
        }
        guard let (flush, qos) = task else { return }
        do {
            try await queue.enqueue(
                Self.flushQueue, qos: qos, payload: [], attributes: flush.attributes, cost: Int(flush.to - flush.from))
        } catch {
            segments.withLock { $0[segment]?.pending = false }
            logger.warning("cannot queue a flush", metadata: ["segment": "\(segment)", "error": "\(error)"])
        }
    }

    /// The segment's manifest (read once, then kept up to date here). Concurrent first calls share one load.
    package func manifest(of segment: SegmentID) async throws -> SegmentManifest {
        if let known = segments.withLock({ $0[segment]?.manifest }) { return known }
        let load = manifestLoads.withLock { loads in
            if let running = loads[segment] { return running }
            let load = Task { try await self.loadManifest(segment) }
            loads[segment] = load
            return load
        }
        defer { manifestLoads.withLock { loads in if loads[segment] == load { loads[segment] = nil } } }
        return try await load.value
    }

    /// Reads the segment's manifest from object storage and makes it this node's.
    ///
    /// A manifest of another ``SegmentInfo/incarnation`` is of an earlier stream of the same name, deleted since.
    /// Its objects are compared with the new stream's bytes (as far as the stream reaches; a later load goes on
    /// from there): the same bytes (a restore from these objects) keep them, with the manifest; any difference
    /// removes them, and the new stream is flushed from scratch under their keys. Until the comparison is done the
    /// load fails, so nothing is flushed or truncated by the earlier stream's manifest.
    func loadManifest(_ segment: SegmentID) async throws -> SegmentManifest {
        if let known = segments.withLock({ $0[segment]?.manifest }) { return known }
        var loaded = try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
        guard case .segmentInfo(let info) = try await store.send(.segmentInfo(segment), timeout: node.requestTimeout)
        else { throw EddyError(.internalError, "the store answered segmentInfo of \(segment) with another response") }
        if let earlier = loaded.incarnation, earlier != info.incarnation {
            switch try await compareEarlierStream(segment, loaded, info) {
            case true?:
                loaded.incarnation = info.incarnation
                try await loaded.save(to: objects, prefix: prefix, segment: segment)
                logger.info(
                    "an earlier stream's objects hold this stream's bytes (a restore?): kept",
                    metadata: ["segment": "\(segment)", "earlier": "\(earlier)", "incarnation": "\(info.incarnation)"])
            case false?:
                try await removeEarlierStream(segment, earlier: earlier, now: info.incarnation)
                loaded = SegmentManifest(segment: segment)
            case nil:
                throw EddyError(
                    .unavailable,
                    "\(segment): the objects of an earlier stream of its name match this one's bytes up to "
                        + "\(segments.withLock { $0[segment]?.matchedTo ?? 0 }) of \(loaded.flushed) so far")
            }
        }
        loaded.incarnation = info.incarnation
        if loaded.objects == 0, loaded.flushed < info.startOffset {
            // The store dropped the segment's front before write-back began: flushing starts at its truncation
            // point (an event boundary).
            loaded.first = info.startOffset
            loaded.flushed = info.startOffset
            loaded.eventBoundary = info.startOffset
            loaded.nextFrame = info.startOffset
        }
        return segments.withLock { s in
            if let raced = s[segment]?.manifest, raced.flushed >= loaded.flushed { return raced }
            s[segment, default: FlushState()].manifest = loaded
            s[segment]!.saved = loaded
            return loaded
        }
    }

    /// The segment's manifest as saved in object storage (read once, then kept up to date here).
    package func savedManifest(of segment: SegmentID) async throws -> SegmentManifest {
        if let saved = segments.withLock({ $0[segment]?.saved }) { return saved }
        _ = try await manifest(of: segment)
        if let saved = segments.withLock({ $0[segment]?.saved }) { return saved }
        return try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
    }
}
