import NIOConcurrencyHelpers
import Synchronization

/// JournalPipe carries journal records from the broker's state changes to the journal writer, in the order the
/// changes happened (records are pushed while the state lock is held), and tells waiters when their records are
/// durable. The writer takes whole runs of records as one batch: one store append, group-committed.
final class JournalPipe: Sendable {
    struct Item {
        var sequence: UInt64
        var records: [[UInt8]]
        var enqueued: [MessageID]
        var snapshot: Bool
    }

    /// What the writer appends in one go.
    struct Batch: Sendable {
        var records: [[UInt8]]
        var enqueued: [MessageID]
        /// The last sequence number in the batch: durable once the batch is.
        var sequence: UInt64
        /// The batch is a snapshot (written alone, so its start offset is the compaction point).
        var snapshot: Bool
    }

    struct State {
        var pending: [Item] = []
        var nextSequence: UInt64 = 1
        var durable: UInt64 = 0
        var failed: [(UInt64, QueueError)] = []
        var waiters: [(UInt64, CheckedContinuation<Result<Void, QueueError>, Never>)] = []
        var writer: CheckedContinuation<Batch?, Never>?
        var closed = false
    }

    let state = NIOLockedValueBox(State())
    static let batchBytes = 512 << 10

    /// Queues records; returns their sequence number (for ``waitDurable(_:)``).
    func push(_ records: [JournalRecord], enqueued: [MessageID] = [], snapshot: Bool = false) -> UInt64 {
        let encoded = records.map { $0.encoded() }
        let (sequence, handoff): (UInt64, (CheckedContinuation<Batch?, Never>, Batch)?) = state.withLockedValue {
            let sequence = $0.nextSequence
            $0.nextSequence += 1
            $0.pending.append(Item(sequence: sequence, records: encoded, enqueued: enqueued, snapshot: snapshot))
            guard let writer = $0.writer else { return (sequence, nil) }
            $0.writer = nil
            return (sequence, (writer, Self.take(&$0)))
        }
        if let (writer, batch) = handoff { writer.resume(returning: batch) }
        return sequence
    }

    /// The next batch to write, waiting for one; nil once closed.
    func next() async -> Batch? {
        await withCheckedContinuation { continuation in
            let ready: Batch?? = state.withLockedValue {
                if !$0.pending.isEmpty { return .some(Self.take(&$0)) }
                if $0.closed { return .some(nil) }
                $0.writer = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Takes a snapshot alone, or a run of ordinary items up to about ``batchBytes``.
    static func take(_ state: inout State) -> Batch {
        let first = state.pending.removeFirst()
        var batch = Batch(
            records: first.records, enqueued: first.enqueued, sequence: first.sequence, snapshot: first.snapshot)
        if first.snapshot { return batch }
        var bytes = first.records.reduce(0) { $0 + $1.count }
        while let next = state.pending.first, !next.snapshot, bytes < batchBytes {
            state.pending.removeFirst()
            batch.records += next.records
            batch.enqueued += next.enqueued
            batch.sequence = next.sequence
            bytes += next.records.reduce(0) { $0 + $1.count }
        }
        return batch
    }

    /// Everything up to `sequence` is durable.
    func durable(_ sequence: UInt64) {
        let ready = state.withLockedValue { state in
            state.durable = max(state.durable, sequence)
            let ready = state.waiters.filter { $0.0 <= sequence }
            state.waiters.removeAll { $0.0 <= sequence }
            return ready
        }
        for (_, waiter) in ready { waiter.resume(returning: .success(())) }
    }

    /// Records up to `sequence` could not be written (the broker is stopping): their waiters fail.
    func fail(_ sequence: UInt64, _ error: QueueError) {
        let failed = state.withLockedValue { state in
            state.failed.append((sequence, error))
            let failed = state.waiters.filter { $0.0 <= sequence }
            state.waiters.removeAll { $0.0 <= sequence }
            return failed
        }
        for (_, waiter) in failed { waiter.resume(returning: .failure(error)) }
    }

    /// Waits until the records of `sequence` are durable.
    func waitDurable(_ sequence: UInt64) async throws(QueueError) {
        let result: Result<Void, QueueError> = await withCheckedContinuation { continuation in
            let now: Result<Void, QueueError>? = state.withLockedValue { state in
                if state.durable >= sequence { return .success(()) }
                if let failure = state.failed.first(where: { $0.0 >= sequence }) { return .failure(failure.1) }
                if state.closed { return .failure(.shutDown) }
                state.waiters.append((sequence, continuation))
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
        try result.get()
    }

    /// The last sequence number handed out.
    var lastSequence: UInt64 { state.withLockedValue { $0.nextSequence - 1 } }

    /// The last durable sequence number.
    var durableSequence: UInt64 { state.withLockedValue { $0.durable } }

    /// Stops the pipe: the writer's wait ends, and waiters of unwritten records fail with ``QueueError/shutDown``.
    func close() {
        let (writer, waiters) = state.withLockedValue { state in
            state.closed = true
            defer {
                state.writer = nil
                state.waiters = []
            }
            return (state.writer, state.waiters)
        }
        writer?.resume(returning: nil)
        for (_, waiter) in waiters { waiter.resume(returning: .failure(.shutDown)) }
    }
}

/// Signal wakes tasks waiting for something to change (a message became ready, a lease was returned).
final class Signal: Sendable {
    let waiters = NIOLockedValueBox<(next: UInt64, map: [UInt64: CheckedContinuation<Void, Never>])>((0, [:]))

    /// Waits until ``signal()`` or for `duration`, whichever comes first.
    func wait(upTo duration: Duration) async {
        await withCheckedContinuation { continuation in
            let id = waiters.withLockedValue { state -> UInt64 in
                state.next += 1
                state.map[state.next] = continuation
                return state.next
            }
            Task {
                try? await Task.sleep(for: duration)
                waiters.withLockedValue { $0.map.removeValue(forKey: id) }?.resume()
            }
        }
    }

    /// Wakes every waiter.
    func signal() {
        let all = waiters.withLockedValue { state in
            defer { state.map = [:] }
            return state.map.values
        }
        for waiter in all { waiter.resume() }
    }
}
