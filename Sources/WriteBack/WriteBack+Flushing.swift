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

/// Flushing: a task's objects, then the segment's manifest.
extension WriteBack {
    // MARK: - Flushing

    /// Runs one flush task: the object, then the manifest; then plans the next task of the segment.
    package func flush(_ task: FlushTask) async throws {
        let recreated = "flush dropped: the stream was deleted and created again"
        do {
            if try await isOfEarlierStream(task) {
                logger.info("\(recreated)", metadata: ["segment": "\(task.segment)"])
            } else {
                try await flushRange(task)
            }
        } catch let error as EddyError where error.code == .streamNotFound || error.code == .segmentNotFound {
            // The stream was deleted meanwhile: nothing is left to flush, and a retry would only fail again.
            logger.info("flush dropped: the stream is deleted", metadata: ["segment": "\(task.segment)"])
            segments.withLock { $0[task.segment] = nil }
            return
        } catch {
            // A flush of the earlier stream of a name fails against the new one's bytes: drop it, not retry it.
            guard (try? await isOfEarlierStream(task, askingTheStore: true)) == true else { throw error }
            logger.info("\(recreated)", metadata: ["segment": "\(task.segment)"])
        }
        // Done (or dropped): the segment may have its next task. (A failed task stays the segment's one task: the
        // queue retries it, or it waits in the dead letters for a redrive.)
        segments.withLock { $0[task.segment]?.pending = false }
        Task { await self.plan(task.segment) }
    }

    /// Whether `task` was planned for an earlier stream of its segment's name (one since deleted and created again):
    /// by the last scan's view of the store, or by asking the store now. A task from before incarnations were
    /// recorded (0) is never stale.
    package func isOfEarlierStream(_ task: FlushTask, askingTheStore ask: Bool = false) async throws -> Bool {
        guard task.incarnation != 0 else { return false }
        if ask {
            guard
                case .segmentInfo(let info) = try await store.send(
                    .segmentInfo(task.segment), timeout: node.requestTimeout)
            else { return false }
            return info.incarnation != task.incarnation
        }
        let current = segments.withLock { $0[task.segment]?.incarnation ?? 0 }
        return current != 0 && current != task.incarnation
    }

    /// Compares the objects of an earlier stream of `segment`'s name (`manifest`'s) with the stream's bytes now,
    /// from where the last comparison got to: true when all of them match, false at a difference (or when the
    /// stream no longer holds bytes the objects do), nil when they match as far as the stream reaches yet.
    package func compareEarlierStream(_ segment: SegmentID, _ manifest: SegmentManifest, _ info: SegmentInfo)
        async throws
        -> Bool?
    {
        var at = max(manifest.first, segments.withLock { $0[segment]?.matchedTo ?? 0 })
        guard info.startOffset <= at else { return false }
        let end = min(manifest.flushed, info.length)
        while at < end {
            let index = geometry.index(containing: at)
            let upTo = min(end, geometry.range(ofBlock: index).upperBound)
            let held: ByteBuffer
            do {
                held = try await coldBlock(segment, index: index)
            } catch {
                // An object store that does not answer: compare later. Else the earlier stream's objects do not hold
                // what its manifest says.
                if error.code == .unavailable { throw error }
                return false
            }
            let skip = Int(at - geometry.range(ofBlock: index).lowerBound)
            guard let objectBytes = held.getSlice(at: held.readerIndex + skip, length: Int(upTo - at)),
                objectBytes == (try await readSegment(segment, from: at, to: upTo))
            else { return false }
            at = upTo
            segments.withLock { $0[segment, default: FlushState()].matchedTo = at }
        }
        return at >= manifest.flushed ? true : nil
    }

    /// Removes the block objects and the manifest of an earlier stream of `segment`'s name, before this one's
    /// flushes take their keys; cold reads forget what they kept of them.
    package func removeEarlierStream(_ segment: SegmentID, earlier: UInt64, now: UInt64) async throws {
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        let keys = try await objects.listAll(prefix: folder).map(\.key)
        for key in keys { try await objects.delete(key) }
        try await objects.delete(SegmentManifest.key(prefix: prefix, segment: segment))
        coldObjects.withLock { kept in kept.removeAll { $0.key.hasPrefix(folder) } }
        logger.warning(
            "removed an earlier stream's objects: the stream was deleted and created again under its name",
            metadata: [
                "segment": "\(segment)", "objects": "\(keys.count)", "earlier": "\(earlier)", "incarnation": "\(now)",
            ])
    }

    /// Flushes a task's range one object at a time (up to ``WriteBackConfiguration/objectBlocks`` blocks each; a
    /// task may span several objects), advancing the manifest after each; a retry resumes at the manifest's
    /// watermark when an earlier attempt got part way.
    package func flushRange(_ task: FlushTask) async throws {
        var from = task.from
        let reached = try await manifest(of: task.segment).flushed
        if reached > task.from && reached < task.to { from = reached }
        let rest = UInt64(configuration.clampedObjectBlocks - 1) * geometry.blockSize
        while true {
            let end = min(task.to, geometry.range(ofBlock: geometry.index(containing: from)).upperBound + rest)
            try await flushObject(FlushTask(segment: task.segment, from: from, to: end))
            let next = try await manifest(of: task.segment).flushed
            guard next > from, next < task.to else { return }
            from = next
        }
    }

    /// Writes one block object (the range of `task`, within one block, or to the end of an object an earlier
    /// attempt wrote at the same start) and advances the manifest past it.
    package func flushObject(_ task: FlushTask) async throws {
        FlushCrashPoint.reach(.beforePut)
        var manifest = try await manifest(of: task.segment)
        guard manifest.flushed == task.from else {
            // Done already (a retry after its manifest failed to save: save it now), or stale: the scan plans anew.
            try await persistManifest(task.segment, now: true)
            return
        }
        let readFrom = min(task.from, manifest.nextFrame)
        var bytes = try await readSegment(task.segment, from: readFrom, to: task.to)
        var data = bytes.getSlice(at: bytes.readerIndex + Int(task.from - readFrom), length: Int(task.to - task.from))!
        let key = BlockObject.key(prefix: prefix, segment: task.segment, start: task.from)
        var end = task.to
        let object = BlockObject(segment: task.segment.number, start: task.from, bytes: data)
        switch try await object.create(in: objects, key: key, level: configuration.compressionLevel) {
        case .written: objectsWritten.add(1, ordering: .relaxed)
        case .alreadyPresent: objectsAdopted.add(1, ordering: .relaxed)
        case .differs(let existing):
            // An earlier attempt (maybe a dead owner's) wrote a different range at this start: adopt it if its
            // bytes are the store's.
            if existing.end > task.to {
                bytes = try await readSegment(task.segment, from: readFrom, to: existing.end)
            }
            data = bytes.getSlice(
                at: bytes.readerIndex + Int(task.from - readFrom), length: Int(existing.end - task.from))!
            guard existing.bytes == data else {
                throw EddyError(.corruptData, "object \(key) holds bytes that differ from the store's")
            }
            end = existing.end
            objectsAdopted.add(1, ordering: .relaxed)
        }
        FlushCrashPoint.reach(.afterPut)
        // Event boundaries up to `end`, from the first frame start at or after `readFrom`.
        var boundary = manifest.eventBoundary
        var next = manifest.nextFrame
        bytes.withUnsafeReadableBytes { raw in
            while next + 4 <= end, next >= readFrom {
                let at = Int(next - readFrom)
                guard at + 4 <= raw.count else { break }
                let body = UInt64(raw.loadUnaligned(fromByteOffset: at, as: UInt32.self).bigEndian)
                boundary = next
                next += 4 + body
            }
        }
        if next <= end { boundary = next }
        manifest.flushed = end
        manifest.eventBoundary = max(manifest.eventBoundary, min(boundary, end))
        manifest.nextFrame = next
        manifest.objects += 1
        let advanced = manifest
        let last = segments.withLock { s -> Bool in
            s[task.segment, default: FlushState()].manifest = advanced
            s[task.segment]!.unsavedBytes += Int(end - task.from)
            return s[task.segment]!.sealed && end >= s[task.segment]!.length
        }
        // A sealed segment's last flush is saved at once (so is a segment's first: no save to wait after).
        try await persistManifest(task.segment, now: last)
        FlushCrashPoint.reach(.afterManifest)
    }

    /// Saves `segment`'s manifest if it moved since the last save: at once when the last save is at least
    /// ``WriteBackConfiguration/manifestInterval`` old (or `now` is set), else once that interval has passed, by a
    /// deferred save that takes every flush of the meantime along. Saves of one segment never overlap. A failed
    /// save throws (the flush is retried); a deferred one is tried again by the next flush or the shutdown.
    package func persistManifest(_ segment: SegmentID, now force: Bool = false) async throws {
        let interval = Int64(configuration.manifestInterval.inSeconds * 1000)
        let now = WallClock.milliseconds()
        enum Step { case nothing, save, later(Int64) }
        let step = segments.withLock { s -> Step in
            guard var state = s[segment], let manifest = state.manifest, manifest != state.saved else {
                return .nothing
            }
            if state.saving { return .nothing }  // the running save looks again when it ends
            let wait = state.savedAt + interval - now
            if force || wait <= 0 {
                state.saving = true
                state.saveScheduled = false
                s[segment] = state
                return .save
            }
            if state.saveScheduled { return .nothing }
            state.saveScheduled = true
            s[segment] = state
            return .later(wait)
        }
        switch step {
        case .nothing: return
        case .later(let wait):
            Task {
                try? await Task.sleep(for: .milliseconds(wait))
                // Due now: if a save is running meanwhile, it schedules the next one when it ends.
                self.segments.withLock { $0[segment]?.saveScheduled = false }
                do {
                    try await self.persistManifest(segment, now: true)
                } catch {
                    self.logger.warning(
                        "cannot save a flush manifest", metadata: ["segment": "\(segment)", "error": "\(error)"])
                }
            }
        case .save:
            do {
                try await saveManifest(segment)
            } catch {
                segments.withLock { $0[segment]?.saving = false }
                throw error
            }
            segments.withLock { $0[segment]?.saving = false }
            // Flushes that finished during the save are saved by the next one.
            try await persistManifest(segment)
        }
    }

    /// Writes the manifest as flushing advanced it, unless another node moved the stored one further (then that
    /// one is adopted): a manifest never moves back.
    func saveManifest(_ segment: SegmentID) async throws {
        guard let state = segments.withLock({ $0[segment] }), var manifest = state.manifest else { return }
        let unsaved = state.unsavedBytes
        manifest.sealed = state.sealed && manifest.flushed >= state.length
        manifest.updatedMilliseconds = WallClock.milliseconds()
        let stored = try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
        if stored.flushed >= manifest.flushed {
            segments.withLock { s in
                s[segment, default: FlushState()].manifest = stored
                s[segment]!.saved = stored
                s[segment]!.unsavedBytes = 0
            }
            return
        }
        try await manifest.save(to: objects, prefix: prefix, segment: segment)
        let saved = manifest
        segments.withLock { s in
            var state = s[segment, default: FlushState()]
            if let current = state.manifest, current.flushed <= saved.flushed { state.manifest = saved }
            state.saved = saved
            state.savedAt = WallClock.milliseconds()
            state.unsavedBytes -= unsaved
            state.history.append((saved.updatedMilliseconds, saved.eventBoundary))
            if state.history.count > 4096 { state.history.removeFirst(1024) }
            s[segment] = state
        }
        flushedBytes.add(unsaved, ordering: .relaxed)
    }

    /// Saves every manifest with flushes not saved yet (at shutdown).
    package func saveAllManifests() async {
        let dirty = segments.withLock { s in s.filter { $0.value.manifest != $0.value.saved }.map(\.key) }
        for segment in dirty {
            do {
                try await persistManifest(segment, now: true)
            } catch {
                logger.warning(
                    "cannot save a flush manifest at shutdown",
                    metadata: ["segment": "\(segment)", "error": "\(error)"])
            }
        }
    }

    /// Bytes [from, to) of a segment: whole blocks the owner cache holds from there (they were appended through
    /// this node), the rest from the store.
    package func readSegment(_ segment: SegmentID, from: UInt64, to: UInt64) async throws -> ByteBuffer {
        // The usual task, one whole block the cache holds: its buffer itself, no copy.
        let first = geometry.index(containing: from)
        if geometry.range(ofBlock: first) == from..<to, let cached = try fullCachedBlock(segment, first) {
            return cached
        }
        var out = ByteBufferAllocator().buffer(capacity: Int(to - from))
        var offset = from
        while offset < to {
            let index = geometry.index(containing: offset)
            let block = geometry.range(ofBlock: index)
            if offset == block.lowerBound, to >= block.upperBound, let cached = try fullCachedBlock(segment, index) {
                out.writeImmutableBuffer(cached)
                offset = block.upperBound
                continue
            }
            let count = UInt32(min(to, block.upperBound) - offset)
            let r = try await store.send(
                .read(segment: segment, offset: offset, maxBytes: count, waitMilliseconds: 0),
                timeout: node.requestTimeout)
            guard case .readResult(_, _, var data) = r, data.readableBytes > 0 else {
                throw EddyError(.ioError, "the store returned no bytes of \(segment) at \(offset) (flushing to \(to))")
            }
            offset += UInt64(data.readableBytes)
            out.writeBuffer(&data)
        }
        return out
    }
}
