import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A server the tests start (SeaweedFS, etcd), tied to the test process: it runs under a small shell that SIGKILLs
/// it when the shell's stdin closes, and this process holds the other end of that pipe, so however the test
/// process ends, even by a crash, the server ends with it. Its output goes to `log`, its PID to `pidFile`.
/// ``stop()`` and ``start()`` stop and restart it (same arguments, same files).
final class TiedProcess: @unchecked Sendable {
    let arguments: [String]
    let log: String
    let pidFile: String
    private let lock = NSLock()
    private var wrapper: Process?
    private var stdinPipe: Pipe?

    init(_ arguments: [String], log: String, pidFile: String) {
        self.arguments = arguments
        self.log = log
        self.pidFile = pidFile
    }

    /// Starts the server unless it runs.
    func start() throws {
        try lock.withLock {
            if wrapper != nil { return }
            let command = arguments.map { "'\($0)'" }.joined(separator: " ")
            let script =
                "\(command) >>'\(log)' 2>&1 & p=$!; echo $p >'\(pidFile)'; cat >/dev/null; kill -9 $p; wait $p 2>/dev/null"
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/bin/sh")
            child.arguments = ["-c", script]
            let pipe = Pipe()
            child.standardInput = pipe
            try child.run()
            wrapper = child
            stdinPipe = pipe
        }
    }

    /// Stops the server (SIGKILL) and waits until it is gone.
    func stop() {
        let (child, pipe) = lock.withLock { () -> (Process?, Pipe?) in
            defer {
                wrapper = nil
                stdinPipe = nil
            }
            return (wrapper, stdinPipe)
        }
        guard let child else { return }
        // The pipe's end may have leaked into another child process; kill the server by its PID as well.
        if let pid { kill(pid, SIGKILL) }
        try? pipe?.fileHandleForWriting.close()
        child.waitUntilExit()
        // A restart writes its own PID: until then, ``isAlive`` must not judge the new one by the old.
        try? FileManager.default.removeItem(atPath: pidFile)
    }

    /// The server's PID, once the wrapper wrote it.
    var pid: Int32? {
        (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap {
            Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// Whether the server runs: its wrapper does, and the server itself (true until its PID is known; a zombie,
    /// exited but not yet reaped by the wrapper, counts as gone).
    var isAlive: Bool {
        guard lock.withLock({ wrapper?.isRunning ?? false }) else { return false }
        guard let pid else { return true }
        let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return kill(pid, 0) == 0 && !state.contains(") Z ")
    }

    /// `/proc/PID/stat` of the server, for error messages.
    var procState: String {
        pid.flatMap { try? String(contentsOfFile: "/proc/\($0)/stat", encoding: .utf8) } ?? "(none)"
    }

    /// The last 2000 characters of the log.
    var logTail: String { String(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "(no log)").suffix(2000)) }
}

/// A GET of `path` on a loopback port over a raw socket (2 s timeout): the answer, status line first, or nil when
/// nothing answered. It stops reading at the end of the body (by `Content-Length`, or the last chunk), not at the
/// end of the connection: servers keep it open whatever the request says, and a read that waits for the close
/// would hold a thread for the whole timeout.
func loopbackGet(port: Int, path: String) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    guard withLoopbackAddress(port: port, { connect(fd, $0, $1) }) == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard write(fd, request, request.count) == request.count else { return nil }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while !complete(out) {
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { break }
        out += buffer[0..<n]
    }
    return out.isEmpty ? nil : String(decoding: out, as: UTF8.self)
}

/// What a finished command printed.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs the program at `path` with `arguments` and `input` on stdin (and `environment` added to this process's)
/// and waits for it. Blocking: from async code, call it through ``offPool(_:)``.
public func runProgram(
    _ path: String, _ arguments: [String], input: String = "", environment: [String: String] = [:]
) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let stdin = Pipe()
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    // Feed stdin and drain the outputs concurrently so no pipe fills up.
    let writer = Thread {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let errorData = Locked(Data())
    let errorReader = Thread { errorData.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
    errorReader.start()
    let out = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while errorReader.isExecuting || !errorReader.isFinished { usleep(1000) }
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
        stderr: String(decoding: errorData.get(), as: UTF8.self))
}

/// A value behind a lock, for tests that share one between threads.
public final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    public init(_ value: T) { self.value = value }
    public func get() -> T { lock.withLock { value } }
    public func set(_ v: T) { lock.withLock { value = v } }
}

/// Waits (polling every 50 ms) until `condition` holds; throws a ``TestServerError`` naming `what` after
/// `seconds`.
public func waitUntil(_ seconds: Double, _ what: String, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TestServerError("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// A test server that could not be started or did not become ready, or a wait that timed out.
public struct TestServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` on a thread of its own and waits for it: blocking waits (readiness polls, subprocesses) must not
/// hold Swift's cooperative threads (two on this machine), which every other test's tasks need meanwhile.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Whether `bytes` hold a whole HTTP answer: headers and a body of `Content-Length` bytes, or a chunked body's
/// last chunk.
private func complete(_ bytes: [UInt8]) -> Bool {
    let text = String(decoding: bytes, as: UTF8.self)
    guard let end = text.range(of: "\r\n\r\n") else { return false }
    let headers = text[..<end.lowerBound].lowercased()
    let body = text[end.upperBound...]
    if let line = headers.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
        let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
    {
        return body.utf8.count >= length
    }
    if headers.contains("transfer-encoding: chunked") { return body.hasSuffix("0\r\n\r\n") }
    return false
}
