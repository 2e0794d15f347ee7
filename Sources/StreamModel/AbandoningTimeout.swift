import Synchronization

/// Runs `body` in a task of its own and waits for it at most `timeout`: returns its result, or nil when the time
/// ran out first, in which case the body's task is cancelled and left to finish by itself.
///
/// Unlike a task group racing the body against a sleep, the caller never waits for a body that ignores
/// cancellation (a storage call stuck in a client library, a handler that hangs): a group would wait for it at its
/// end, and hang with it. The timer is cancelled as soon as the body finishes.
public func withAbandoningTimeout<T: Sendable>(
    _ timeout: Duration, _ body: @escaping @Sendable () async -> T
) async -> T? {
    let race = TimeoutRace()
    return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        let work = Task {
            let value = await body()
            if race.finish() {
                race.cancelTimer()
                continuation.resume(returning: value)
            }
        }
        race.setTimer(
            Task {
                guard (try? await Task.sleep(for: timeout)) != nil, race.finish() else { return }
                work.cancel()
                continuation.resume(returning: nil)
            })
    }
}

/// Which of a body and its timer ends the wait: the first to call ``finish()``.
final class TimeoutRace: Sendable {
    let done = Atomic<Bool>(false)
    let timer = Mutex<Task<Void, Never>?>(nil)

    /// True for the first caller only.
    func finish() -> Bool {
        done.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }

    /// Keeps the timer's task, cancelling it at once when the body has finished already.
    func setTimer(_ task: Task<Void, Never>) {
        let finished = timer.withLock { slot -> Bool in
            slot = task
            return done.load(ordering: .acquiring)
        }
        if finished { task.cancel() }
    }

    func cancelTimer() { timer.withLock { $0 }?.cancel() }
}
