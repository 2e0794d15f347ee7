import Dispatch
import StreamModel
import Synchronization

/// CheckpointWriter writes checkpoints off the journal thread. At a checkpoint the journal thread only rolls the
/// journal and hands over what the checkpoint needs (``Job``): the segment files written since the last one,
/// the directories whose entries changed, and the catalog as of the roll. This writer makes those files and
/// directories durable, writes the checkpoint, and deletes the journal files it covers, while the journal
/// thread goes on committing appends into the new journal file (before, the journal stalled for the whole
/// checkpoint: tens of milliseconds of `fdatasync` every 64 MiB, the p99 of large appends).
///
/// Why this is safe: every record of the journal files the checkpoint covers was applied to the segment files
/// (written with `pwrite`) before the roll, so an `fdatasync` started after the roll makes all of them durable;
/// writes that land in the same files meanwhile belong to later journal files, which the checkpoint does not
/// cover and recovery replays. One checkpoint is written at a time; journal files are deleted only after the
/// checkpoint that covers them is on disk. A crash at any point leaves the previous checkpoint and every journal
/// file after it.
final class CheckpointWriter: Sendable {
    /// What one checkpoint makes durable and writes.
    struct Job: Sendable {
        var files: [SegmentFile]
        var directories: [String]
        var checkpoint: Checkpoint
    }

    private struct State {
        var busy = false
        var failure: EddyError?
    }

    /// The store's data directory (the checkpoint file, the journal files).
    private let data: String
    private let queue = DispatchQueue(label: "eddy-checkpoint")
    private let state = Mutex(State())
    /// Called when a checkpoint is written (the store counts them).
    private let written: @Sendable () -> Void
    /// Called before a background checkpoint starts; returning false abandons it as a crash would (tests).
    private let hook: (@Sendable () -> Bool)?

    init(data: String, hook: (@Sendable () -> Bool)?, written: @escaping @Sendable () -> Void) {
        self.data = data
        self.hook = hook
        self.written = written
    }

    /// Whether a background checkpoint is being written.
    var isBusy: Bool { state.withLock { $0.busy } }

    /// The error of a background checkpoint that failed, once.
    func takeFailure() -> EddyError? {
        state.withLock { s in
            defer { s.failure = nil }
            return s.failure
        }
    }

    /// Writes `job` in the background. Only one at a time: the caller checks ``isBusy`` first.
    func start(_ job: Job) {
        state.withLock { s in
            precondition(!s.busy, "a checkpoint is already being written")
            s.busy = true
        }
        queue.async { [self] in
            var failure: EddyError?
            if hook?() ?? true {
                do throws(EddyError) { try write(job) } catch { failure = error }
            }
            state.withLock { s in
                s.busy = false
                if let failure { s.failure = failure }
            }
        }
    }

    /// Waits for the background checkpoint being written, if any.
    func wait() { queue.sync {} }

    /// Writes `job` on the calling thread.
    func write(_ job: Job) throws(EddyError) {
        for file in job.files { try file.sync() }
        // Deepest first, so a new directory is durable before the entry that names it in its parent.
        for directory in job.directories.sorted(by: { $0.count > $1.count }) {
            try FileSystem.syncDirectory(directory, missingIsFine: true)
        }
        try FileSystem.writeAtomically(job.checkpoint.encode(), to: Recovery.checkpointPath(data), directory: data)
        let journals = data + "/journal"
        for old in JournalFiles.sequences(directory: journals) where old < job.checkpoint.journalSequence {
            FileSystem.removeGradually(JournalFiles.path(directory: journals, sequence: old))
        }
        written()
    }
}
