import Logging
import NIOConcurrencyHelpers
import NIOCore
import ObjectStorage
import StreamModel
import Synchronization

/// The queue's background work: the journal writer, the delay timer, compaction and the roll to the archive.
extension WriteBackQueue {
    // MARK: - Background: journal writer, timer, compaction

    func startBackground() {
        let writer = Task { [weak self] in
            while let self, !Task.isCancelled {
                guard let batch = await self.pipe.next() else { return }
                await self.write(batch)
            }
        }
        let timer = Task { [weak self] in
            while let self, !Task.isCancelled, !self.runtime.withLockedValue({ $0.stopped }) {
                self.tick()
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        runtime.withLockedValue {
            $0.writer = writer
            $0.background.append(timer)
        }
    }

    func tick() {
        let now = clock()
        let records = state.withLock { state in
            let records = state.tick(now: now)
            if !records.isEmpty { _ = pipe.push(records) }
            return records
        }
        for case .dead(let id, _, let reason) in records {
            logger.warning("message dead-lettered", metadata: ["id": "\(id)", "reason": "\(reason)"])
        }
        if !records.isEmpty { wakeup.signal() }
        let compact = runtime.withLockedValue { runtime -> Bool in
            guard !runtime.compacting, runtime.bytesSinceSnapshot >= configuration.compactionThresholdBytes else {
                return false
            }
            runtime.compacting = true
            return true
        }
        if compact { requestSnapshot() }
    }

    /// Queues a snapshot of the whole state; once it is durable, the journal before it is rolled to the archive
    /// and truncated.
    public func requestSnapshot() {
        state.withLock { state in _ = pipe.push(state.snapshot(), snapshot: true) }
    }

    /// Writes one batch, retrying until it is durable (the same batch, unchanged) or the broker stops.
    func write(_ batch: JournalPipe.Batch) async {
        var attempt = 0
        var range: (start: UInt64, end: UInt64)? = nil
        var written = 0
        var snapshotStart: UInt64? = nil
        // A batch may be too large for one append (a big snapshot): split it, in order.
        var chunks: [[[UInt8]]] = [[]]
        var chunkBytes = 0
        for record in batch.records {
            if chunkBytes + record.count > 256 << 10 && !chunks[chunks.count - 1].isEmpty {
                chunks.append([])
                chunkBytes = 0
            }
            chunks[chunks.count - 1].append(record)
            chunkBytes += record.count + 32
        }
        while written < chunks.count {
            do {
                range = try await journal.append(chunks[written])
                if snapshotStart == nil { snapshotStart = range!.start }
                written += 1
                attempt = 0
            } catch {
                attempt += 1
                if attempt == 1 || attempt % 20 == 0 {
                    logger.error("queue journal append failed; retrying", metadata: ["error": "\(error)"])
                }
                if runtime.withLockedValue({ $0.stopped }) && attempt > 3 {
                    pipe.fail(batch.sequence, QueueError.journal("\(error)"))
                    return
                }
                try? await Task.sleep(for: .milliseconds(min(1000, 10 << min(attempt, 7))))
            }
        }
        let now = clock()
        if !batch.enqueued.isEmpty {
            state.withLock { state in
                for id in batch.enqueued { state.markDurable(id, now: now) }
            }
            wakeup.signal()
        }
        pipe.durable(batch.sequence)
        guard let range else { return }
        let added = range.end - (snapshotStart ?? range.start)
        let roll: (UInt64, UInt64)? = runtime.withLockedValue { runtime in
            runtime.bytesSinceSnapshot += added
            guard batch.snapshot, let snapshotStart else { return nil }
            runtime.bytesSinceSnapshot = range.end - snapshotStart
            runtime.compacting = false
            let from = runtime.journalStart
            runtime.journalStart = snapshotStart
            return (from, snapshotStart)
        }
        if let (from, to) = roll, to > from { await rollAndTruncate(from: from, to: to) }
    }

    /// Copies the journal's bytes in [from, to) to the archive (one object, its key the start offset, fixed
    /// width), then truncates the journal there. Without an archive it only truncates.
    func rollAndTruncate(from: UInt64, to: UInt64) async {
        do {
            if let archive {
                var bytes = ByteBuffer()
                var offset = from
                while offset < to {
                    var chunk = try await journal.read(from: offset, maxBytes: Int(min(to - offset, 4 << 20)))
                    if chunk.readableBytes == 0 { break }
                    let take = min(chunk.readableBytes, Int(to - offset))
                    bytes.writeBuffer(&chunk)
                    offset += UInt64(take)
                }
                let key = ObjectKey.join(archive.prefix, ObjectKey.fixedWidth(from, 20) + ".jnl")
                _ = try await archive.store.put(key, body: bytes, mode: .createOnly)
                runtime.withLockedValue { $0.rolledSegments += 1 }
            }
            try await journal.truncate(before: to)
            logger.info("queue journal compacted", metadata: ["dropped": "\(to - from)", "start": "\(to)"])
        } catch {
            logger.error("queue journal roll failed (kept in the journal)", metadata: ["error": "\(error)"])
        }
    }

    /// Stops the queue in order: no new leases; each worker may finish the message in hand for up to
    /// `finishWork` (its ack or nack is journaled, so no lease is left dangling; what still runs then is
    /// cancelled and its lease expires); then it waits up to `grace` until every journal record is durable.
    public func shutdown(finishWork: Duration = .zero, grace: Duration = .seconds(10)) async {
        let (workers, background, writer) = runtime.withLockedValue {
            runtime -> ([Task<Void, Never>], [Task<Void, Never>], Task<Void, Never>?) in
            runtime.stopped = true
            return (runtime.workers.values.map(\.task), runtime.background, runtime.writer)
        }
        wakeup.signal()
        for task in background { task.cancel() }
        if finishWork > .zero {
            let finished = await withAbandoningTimeout(finishWork) {
                for task in workers { await task.value }
                return true
            }
            if finished == nil {
                logger.warning(
                    "queue workers did not finish their messages in time; cancelled (their leases expire and the messages come back)",
                    metadata: ["waited": "\(finishWork)"])
            }
        }
        for task in workers { task.cancel() }
        let sequence = pipe.lastSequence
        let deadline = ContinuousClock.now + grace
        while pipe.durableSequence < sequence && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        pipe.close()
        writer?.cancel()
    }
}
