import Synchronization

/// SingleFlight runs one job per key at a time, however many callers ask for it (groupcache's `singleflight`):
/// the first caller starts the job, the others wait for its result, every waiter gets the same value or error.
///
/// Waiters count: a waiter that is cancelled stops waiting (with `CancellationError`) and the job goes on for the
/// others, but when the last waiter has gone the job's task is cancelled too, so work nobody waits for stops.
/// A job's failure reaches all of its waiters; the next call after it starts a new job.
public final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private final class Flight: Sendable {
        struct State {
            var result: Result<Value, any Error>?
            var waiters: [Int: CheckedContinuation<Value, any Error>] = [:]
            var nextID = 0
            /// Waiters that joined and have not left: when it drops to 0 before the result, the job is cancelled.
            var interested = 0
            var task: Task<Void, Never>?
        }
        let state = Mutex(State())
    }

    private let flights = Mutex<[Key: Flight]>([:])

    /// Creates an empty group.
    public init() {}

    /// Jobs in progress.
    public var count: Int { flights.withLock { $0.count } }

    /// Whether a job for `key` is in progress.
    public func isRunning(_ key: Key) -> Bool { flights.withLock { $0[key] != nil } }

    /// The result of the job for `key`: the one in progress, or `job` started now.
    /// - Returns: the value and whether this call joined a job already in progress.
    public func run(_ key: Key, _ job: @escaping @Sendable () async throws -> Value) async throws -> (Value, Bool) {
        let (flight, started) = flights.withLock { f -> (Flight, Bool) in
            if let running = f[key] { return (running, false) }
            let new = Flight()
            f[key] = new
            return (new, true)
        }
        flight.state.withLock { $0.interested += 1 }
        if started {
            let task = Task {
                let result: Result<Value, any Error>
                do { result = .success(try await job()) } catch { result = .failure(error) }
                self.flights.withLock { f in
                    if f[key] === flight { f.removeValue(forKey: key) }
                }
                let waiters = flight.state.withLock { s in
                    s.result = result
                    defer { s.waiters.removeAll() }
                    return Array(s.waiters.values)
                }
                for w in waiters { w.resume(with: result) }
            }
            flight.state.withLock { $0.task = task }
        }
        return (try await wait(flight), !started)
    }

    /// Starts the job for `key` unless one is in progress, without waiting for it (read-ahead).
    /// - Returns: whether a job was started.
    @discardableResult
    public func start(_ key: Key, _ job: @escaping @Sendable () async throws -> Value) -> Bool {
        guard !isRunning(key) else { return false }
        Task { _ = try? await run(key, job) }
        return true
    }

    private func wait(_ flight: Flight) async throws -> Value {
        let id = flight.state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Value, any Error>) in
                let ready: Result<Value, any Error>? = flight.state.withLock { s in
                    if let r = s.result { return r }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiters[id] = c
                    return nil
                }
                if let ready { c.resume(with: ready) }
            }
        } onCancel: {
            let (c, orphaned) = flight.state.withLock { s in
                let c = s.waiters.removeValue(forKey: id)
                s.interested -= 1
                return (c, s.interested == 0 && s.result == nil ? s.task : nil)
            }
            c?.resume(throwing: CancellationError())
            orphaned?.cancel()
        }
    }
}
