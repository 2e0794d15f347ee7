import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// ChildProcess is a program the tests run (an `eddy` server or command, SeaweedFS, etcd, chromium), started with
/// `posix_spawn` (not Foundation's `Process`, whose Swift 6.3.1 `run()` was seen to crash with many open files)
/// and tied to the test process so that it cannot outlive it:
/// - it runs in a process group of its own, which ``kill()`` and ``terminate()`` signal whole;
/// - it is started through the `eddy-test-exec` shim, which sets `PR_SET_PDEATHSIG` (SIGKILL) before it execs
///   the program, so the kernel kills it when the test process dies, even by SIGKILL; the signal follows the
///   death of the spawning *thread*, so every spawn runs on one thread that lives as long as the process;
/// - the groups still alive when the test process exits normally are SIGKILLed by an `atexit` handler.
///
/// Every child also gets `EDDY_TEST_RUN` from this process's environment (scripts/test.sh sets it), which is how
/// `make test` finds, at its end, any process a test started and left running.
///
/// Its state (the exit status once reaped) is behind a lock; the calls may come from any thread.
public final class ChildProcess: @unchecked Sendable {
    /// Where the child's standard input comes from.
    public enum Input: Sendable {
        /// `/dev/null`.
        case null
        /// A file, read from its start.
        case file(String)
        /// A pipe this object holds the other end of: ``write(_:)`` and ``closeInput()``.
        case pipe
    }

    /// Where the child's standard output or error goes.
    public enum Output: Sendable {
        /// `/dev/null`.
        case null
        /// A file, appended to (created when missing).
        case file(String)
    }

    /// The child's process ID, which is also its process group's ID.
    public let pid: pid_t
    /// The program and its arguments.
    public let commandLine: [String]
    private let lock = NSLock()
    /// The raw wait status once the child was reaped (protected by `lock`).
    private var waitStatus: Int32?
    /// The write end of the input pipe, or -1 (protected by `lock`).
    private var inputFD: Int32

    /// Starts `program` (a path, or a name looked up on the PATH) with `arguments`.
    /// - Parameters:
    ///   - environment: added to this process's environment (a value here wins).
    ///   - input, output, error: the child's standard files.
    ///   - directory: the working directory (nil: this process's).
    /// - Throws: ``TestServerError`` when the program cannot be found or spawned.
    public init(
        _ program: String, _ arguments: [String], environment: [String: String] = [:], input: Input = .null,
        output: Output = .null, error: Output = .null
    ) throws {
        let path = try Self.resolve(program)
        commandLine = [path] + arguments
        let merged = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let spawnArguments = Self.tie(commandLine)
        // The pipe is made on the spawner thread too, so no other spawn can inherit it before it is close-on-exec.
        let result = Spawner.shared.run { () -> SpawnResult in
            var fds: [Int32] = [-1, -1]
            if case .pipe = input {
                guard pipe(&fds) == 0 else { return .failure("pipe: \(String(cString: strerror(errno)))") }
                for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            }
            let r = Self.spawn(
                spawnArguments, environment: merged, input: input, inputFD: fds[0], output: output, error: error)
            if fds[0] >= 0 { close(fds[0]) }
            guard case .success(let pid, _) = r else {
                if fds[1] >= 0 { close(fds[1]) }
                return r
            }
            return .success(pid, fds[1])
        }
        switch result {
        case .success(let pid, let writeEnd):
            self.pid = pid
            inputFD = writeEnd
            liveGroups.withLock { _ = $0.insert(pid) }
        case .failure(let message):
            throw TestServerError("cannot start \(path): \(message)")
        }
    }

    deinit {
        if inputFD >= 0 { close(inputFD) }
    }

    /// Writes `bytes` to the child's standard input (a ``Input/pipe``); false when the child closed it.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        lock.withLock {
            guard inputFD >= 0 else { return false }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(inputFD, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
    }

    /// Writes `text` to the child's standard input.
    @discardableResult
    public func write(_ text: String) -> Bool { write(Array(text.utf8)) }

    /// Closes the child's standard input (end of file for it).
    public func closeInput() {
        lock.withLock {
            if inputFD >= 0 { close(inputFD) }
            inputFD = -1
        }
    }

    /// Sends `signal` to the child's whole process group (unless it was reaped already).
    public func signal(_ signal: Int32) {
        lock.withLock {
            if waitStatus == nil { _ = Glibc.kill(-pid, signal) }
        }
    }

    /// SIGKILLs the child's process group and waits for the child.
    public func kill() {
        signal(SIGKILL)
        _ = wait()
    }

    /// SIGTERMs the child's process group, waits up to `grace`, then SIGKILLs it; returns the exit status.
    @discardableResult
    public func terminate(grace: Duration = .seconds(20)) -> Int32 {
        signal(SIGTERM)
        if let status = wait(for: grace) { return status }
        signal(SIGKILL)
        return wait()
    }

    /// Whether the child has not exited yet (it is reaped when it has).
    public var isRunning: Bool { poll() == nil }

    /// Waits until the child exits; returns its exit status (128 + N when signal N ended it).
    public func wait() -> Int32 {
        while true {
            if let status = poll() { return status }
            usleep(5_000)
        }
    }

    /// Waits at most `limit` for the child to exit; its exit status, or nil if it still runs.
    public func wait(for limit: Duration) -> Int32? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let status = poll() { return status }
            usleep(5_000)
        }
        return poll()
    }

    /// The exit status (128 + N for signal N) once the child exited, reaping it; nil while it runs.
    private func poll() -> Int32? {
        lock.withLock {
            if waitStatus == nil {
                var status: Int32 = 0
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid || (r < 0 && errno == ECHILD) {
                    waitStatus = r == pid ? status : (128 + SIGKILL) << 8
                    // The group may hold grandchildren still; they go with it.
                    _ = Glibc.kill(-pid, SIGKILL)
                    liveGroups.withLock { _ = $0.remove(pid) }
                }
            }
            guard let status = waitStatus else { return nil }
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
    }

    /// `program` as an absolute path: as given when it holds a `/`, else the first match on the PATH.
    static func resolve(_ program: String) throws -> String {
        if program.contains("/") { return program }
        for folder in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(folder)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestServerError("\(program) is not on the PATH")
    }

    /// The command line that runs `commandLine` through the exec shim (or `setpriv --pdeathsig KILL`, where the
    /// shim was not built; it lacks the shim's check that the parent still lives).
    static func tie(_ commandLine: [String]) -> [String] {
        if let shim = builtProduct("eddy-test-exec") { return [shim, String(getpid())] + commandLine }
        return ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"] + commandLine
    }

    private enum SpawnResult {
        /// The child's PID and the write end of its input pipe (-1: none).
        case success(pid_t, Int32)
        case failure(String)
    }

    /// posix_spawn of `arguments` in a new process group, signals at their defaults, standard files as asked.
    private static func spawn(
        _ arguments: [String], environment: [String: String], input: Input, inputFD: Int32, output: Output,
        error: Output
    ) -> SpawnResult {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        switch input {
        case .null: posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, 0, path, O_RDONLY, 0)
        case .pipe: posix_spawn_file_actions_adddup2(&actions, inputFD, 0)
        }
        for (fd, target) in [(Int32(1), output), (Int32(2), error)] {
            switch target {
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard rc == 0 else { return .failure(String(cString: strerror(rc))) }
        return .success(pid, -1)
    }
}

/// The process groups of children not yet reaped, SIGKILLed at exit.
private let liveGroups: Mutex<Set<pid_t>> = {
    atexit {
        for group in liveGroups.withLock({ $0 }) { _ = kill(-group, SIGKILL) }
    }
    return Mutex([])
}()

/// The one thread every ``ChildProcess`` is spawned from: `PR_SET_PDEATHSIG` fires when the spawning thread
/// ends, so that thread must live as long as the process.
private final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        // A write to the input pipe of a child that died must fail with EPIPE, not kill the test process; the
        // children get SIGPIPE back at its default (``ChildProcess`` resets it at spawn).
        signal(SIGPIPE, SIG_IGN)
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "eddy-test-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner thread and waits for its result.
    func run<T>(_ body: @escaping () -> T) -> T {
        let done = NSCondition()
        var result: T?
        condition.withLock {
            jobs.append {
                let r = body()
                done.withLock {
                    result = r
                    done.signal()
                }
            }
            condition.signal()
        }
        return done.withLock {
            while result == nil { done.wait() }
            return result!
        }
    }

    private func loop() {
        while true {
            let job = condition.withLock { () -> () -> Void in
                while jobs.isEmpty { condition.wait() }
                return jobs.removeFirst()
            }
            job()
        }
    }
}

/// An executable built beside the running test bundle or helper (`.build/debug/NAME`), or nil.
public func builtProduct(_ name: String) -> String? {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [here, here.deletingLastPathComponent(), URL(fileURLWithPath: ".build/debug")] {
        let path = candidate.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
