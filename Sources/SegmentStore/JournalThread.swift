import CoreMetrics
import Foundation
import Logging
import StreamModel

/// JournalThread is the store's one writer. It owns the staged catalog (ahead of the disk by at most the
/// batch in hand), the journal writer and the segment files' write side; nothing else touches them, so
/// they need no lock (`@unchecked Sendable` because the thread that runs it is not visible to the compiler).
final class JournalThread: @unchecked Sendable {
    let configuration: StoreConfiguration
    let core: StoreCore
    private var journal: JournalWriter
    private var staged: Catalog
    private var files: SegmentFileSet
    private var nextLSN: UInt64
    /// Set when the journal or a segment file failed to write: the store then refuses every write, because
    /// its staged state is ahead of the disk. A restart replays the journal and clears it.
    private var failure: EddyError?
    private var buffer = ByteWriter()
    private let finished = DispatchSemaphore(value: 0)
    /// The time of each journal write + sync, when metrics are configured.
    private let syncTimer: CoreMetrics.Timer?
    /// Writes checkpoints while the journal goes on.
    private let checkpoints: CheckpointWriter

    init(
        configuration: StoreConfiguration, core: StoreCore, journal: JournalWriter, catalog: Catalog,
        files: SegmentFileSet, nextLSN: UInt64
    ) {
        self.configuration = configuration
        self.core = core
        self.journal = journal
        self.staged = catalog
        self.files = files
        self.nextLSN = nextLSN
        checkpoints = CheckpointWriter(data: configuration.dataDirectory, hook: configuration.checkpointHook) {
            core.shared.withLock { $0.stats.checkpoints += 1 }
        }
        syncTimer = configuration.metricsFactory.map {
            CoreMetrics.Timer(label: "eddy_store_journal_sync_seconds", dimensions: [], factory: $0)
        }
    }

    func start() {
        let thread = Thread { [self] in
            while case let ops = core.queue.takeBatch(maxBytes: configuration.maxBatchBytes), !ops.isEmpty {
                process(ops)
            }
            if failure == nil && configuration.checkpointOnClose {
                do throws(EddyError) { try checkpoint() } catch {
                    configuration.logger.error("checkpoint at close failed", metadata: ["error": "\(error)"])
                }
            }
            finished.signal()
        }
        thread.name = "eddy-journal"
        thread.start()
    }

    func join() { finished.wait() }

    /// One group commit: stage every request, write their records with one durable write, apply them to the
    /// segment files, publish, answer.
    private func process(_ ops: [Operation]) {
        if let failure {
            for op in ops { op.fail(failure) }
            return
        }
        buffer.bytes.removeAll(keepingCapacity: true)
        var records: [(lsn: UInt64, record: JournalRecord)] = []
        var replies: [() -> Void] = []
        var duplicates: UInt64 = 0

        func stage(_ record: JournalRecord) {
            record.encode(lsn: nextLSN, into: &buffer)
            do { try staged.apply(record, lsn: nextLSN) } catch {
                preconditionFailure("a prepared record does not apply: \(error)")
            }
            records.append((nextLSN, record))
            nextLSN += 1
        }

        for op in ops {
            switch op {
            case .createStream(let name, let count, let reply):
                if staged.streams[name] != nil {
                    replies.append { reply(.failure(EddyError(.streamExists, "stream '\(name)' already exists"))) }
                } else {
                    stage(.createStream(name, segments: count))
                    replies.append { reply(.success(())) }
                }
            case .deleteStream(let name, let reply):
                if staged.streams[name] == nil {
                    replies.append { reply(.failure(EddyError(.streamNotFound, "stream '\(name)' does not exist"))) }
                } else {
                    stage(.deleteStream(name))
                    replies.append { reply(.success(())) }
                }
            case .append(let request, let reply):
                do throws(EddyError) {
                    switch try staged.prepare(request) {
                    case .duplicate(let ack):
                        duplicates += 1
                        replies.append { reply(.success(ack)) }
                    case .record(let record):
                        guard case .append(let a) = record else { preconditionFailure("prepare returned \(record)") }
                        stage(record)
                        let ack = AppendAck(
                            segment: a.segment, firstOffset: a.offset, eventCount: UInt32(a.frameSizes.count),
                            duplicate: false)
                        replies.append { reply(.success(ack)) }
                    }
                } catch {
                    replies.append { reply(.failure(error)) }
                }
            case .seal(let id, let reply):
                do throws(EddyError) {
                    if try !staged.segment(id).sealed { stage(.seal(id)) }
                    replies.append { reply(.success(())) }
                } catch {
                    replies.append { reply(.failure(error)) }
                }
            case .truncate(let id, let offset, let reply):
                do throws(EddyError) {
                    let s = try staged.segment(id)
                    if offset < s.start {
                        throw EddyError(.truncated, "segment \(id) is already truncated at \(s.start)")
                    }
                    if offset > s.length {
                        throw EddyError(.offsetOutOfRange, "offset \(offset) is past the end of \(id) (\(s.length))")
                    }
                    if offset > s.start { stage(.truncate(id, offset: offset)) }
                    replies.append { reply(.success(())) }
                } catch {
                    replies.append { reply(.failure(error)) }
                }
            }
        }

        if !records.isEmpty {
            do throws(EddyError) {
                let started = DispatchTime.now().uptimeNanoseconds
                try journal.append(buffer.bytes)
                syncTimer?.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started)
                for (_, record) in records { try files.apply(record) }
            } catch {
                failure = error
                configuration.logger.critical(
                    "journal write failed; the store refuses writes until restarted", metadata: ["error": "\(error)"])
                for op in ops { op.fail(error) }
                return
            }
            publish(records, duplicates: duplicates)
        } else if duplicates > 0 {
            core.shared.withLock { $0.stats.duplicates += duplicates }
        }
        for reply in replies { reply() }

        if let error = checkpoints.takeFailure() {
            failure = error
            configuration.logger.critical(
                "checkpoint failed; the store refuses writes until restarted", metadata: ["error": "\(error)"])
        } else if journal.position >= configuration.checkpointBytes && !checkpoints.isBusy {
            // A checkpoint still being written when the next is due: the journal grows until it is done.
            do throws(EddyError) { checkpoints.start(try rollForCheckpoint()) } catch {
                failure = error
                configuration.logger.critical("checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Makes the batch visible to readers and wakes the tail waiters it satisfies.
    private func publish(_ records: [(lsn: UInt64, record: JournalRecord)], duplicates: UInt64) {
        let openFiles = files.files
        let woken = core.shared.withLock { s -> [StoreCore.Waiter] in
            var touched: Set<SegmentID> = []
            for (lsn, record) in records {
                do { try s.catalog.apply(record, lsn: lsn) } catch {
                    preconditionFailure("a durable record does not apply to the published catalog: \(error)")
                }
                switch record {
                case .createStream(let name, let count):
                    for n in 0..<count {
                        let id = SegmentID(stream: name, number: n)
                        s.files[id] = openFiles[id]
                    }
                case .deleteStream(let name):
                    for id in s.files.keys where id.stream == name {
                        s.files.removeValue(forKey: id)
                        touched.insert(id)
                    }
                case .append(let a):
                    touched.insert(a.segment)
                    s.stats.events += UInt64(a.frameSizes.count)
                    s.stats.bytes += UInt64(a.frames.count)
                case .seal(let id):
                    touched.insert(id)
                case .truncate:
                    break
                }
            }
            s.stats.syncs += 1
            s.stats.records += UInt64(records.count)
            s.stats.duplicates += duplicates
            return touched.flatMap { StoreCore.takeSatisfied(&s, $0) }
        }
        for waiter in woken { DispatchQueue.global().async(execute: waiter.wake) }
    }

    /// Starts a new journal file and returns the checkpoint that covers the ones before it: the catalog as of
    /// now and the segment files and directories to make durable first.
    private func rollForCheckpoint() throws(EddyError) -> CheckpointWriter.Job {
        let unsynced = files.takeUnsynced()
        try journal.roll()
        return CheckpointWriter.Job(
            files: unsynced.files, directories: unsynced.directories,
            checkpoint: Checkpoint(journalSequence: journal.sequence, nextLSN: nextLSN, catalog: staged))
    }

    /// Takes a checkpoint on the calling thread (at open and at close, with the journal thread stopped): waits
    /// for a background one, makes the segment files durable, starts a new journal file, writes the checkpoint
    /// and deletes the journal files it covers.
    func checkpoint() throws(EddyError) {
        checkpoints.wait()
        if let error = checkpoints.takeFailure() { throw error }
        try checkpoints.write(try rollForCheckpoint())
    }
}
