import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A server the tests start (SeaweedFS, etcd) as a ``ChildProcess``: tied to the test process, so however that
/// ends, even by a crash, the server ends with it. Its output goes to `log`. ``stop()`` and ``start()`` stop and
/// restart it (same arguments, same files).
final class TiedProcess: @unchecked Sendable {
    let arguments: [String]
    let log: String
    private let lock = NSLock()
    private var child: ChildProcess?

    init(_ arguments: [String], log: String) {
        self.arguments = arguments
        self.log = log
    }

    /// Starts the server unless it runs.
    func start() throws {
        try lock.withLock {
            if child != nil { return }
            child = try ChildProcess(
                arguments[0], Array(arguments.dropFirst()), output: .file(log), error: .file(log))
        }
    }

    /// Stops the server (SIGKILL to its process group) and waits until it is gone.
    func stop() {
        let stopped = lock.withLock { () -> ChildProcess? in
            defer { child = nil }
            return child
        }
        stopped?.kill()
    }

    /// The server's PID while it runs.
    var pid: Int32? { lock.withLock { child?.pid } }

    /// Whether the server runs (a zombie, exited but not yet reaped, counts as gone: it is reaped here).
    var isAlive: Bool { lock.withLock { child?.isRunning ?? false } }

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
/// and waits for it (a ``ChildProcess``; its output goes through temporary files, so no pipe can fill up).
/// Blocking: from async code, call it through ``offPool(_:)``.
public func runProgram(
    _ path: String, _ arguments: [String], input: String = "", environment: [String: String] = [:]
) throws -> CommandResult {
    let base = NSTemporaryDirectory() + "eddy-run-" + UUID().uuidString
    let (inPath, outPath, errPath) = (base + ".in", base + ".out", base + ".err")
    defer { for p in [inPath, outPath, errPath] { try? FileManager.default.removeItem(atPath: p) } }
    try Data(input.utf8).write(to: URL(fileURLWithPath: inPath))
    let child = try ChildProcess(
        path, arguments, environment: environment, input: .file(inPath), output: .file(outPath),
        error: .file(errPath))
    let status = child.wait()
    func text(_ p: String) -> String { (try? String(contentsOfFile: p, encoding: .utf8)) ?? "" }
    return CommandResult(status: status, stdout: text(outPath), stderr: text(errPath))
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
