import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real etcd for tests: Debian's `etcd-server` (`/usr/bin/etcd`, 3.4) on two free loopback ports in a fresh
/// folder, a ``TiedProcess`` (it ends with the test process however that ends). ``stop()`` (SIGKILL) and
/// ``start()`` stop and restart it on the same ports and data.
public final class EtcdServer: Sendable {
    /// The folder holding etcd's data and log.
    public let directory: String
    /// The client port.
    public let clientPort: Int
    let server: TiedProcess

    /// The client URL, `http://127.0.0.1:PORT`.
    public var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    /// Starts an etcd of its own; ``waitUntilReady()`` waits for it.
    public init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") else {
            throw TestServerError("etcd is not installed: apt-get install etcd-server (scripts/install-deps.sh does)")
        }
        directory = NSTemporaryDirectory() + "eddy-etcd-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        clientPort = try freeLoopbackPort()
        let client = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(try freeLoopbackPort())"
        server = TiedProcess(
            [
                "/usr/bin/etcd", "--name", "eddy-test", "--data-dir", "\(directory)/data",
                "--listen-client-urls", client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", "eddy-test=\(peer)",
            ], log: directory + "/etcd.log")
        try server.start()
    }

    deinit {
        server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Starts etcd (again, after ``stop()``) on the same ports and data.
    public func start() throws { try server.start() }

    /// Stops etcd with SIGKILL and waits until it is gone; its data stays for ``start()``.
    public func stop() { server.stop() }

    /// Waits (up to 30 s) until the client port answers `/health` with `"health":"true"`; the polls run on a
    /// thread of their own, so the deadline is real time even when the cooperative threads are busy.
    public func waitUntilReady() async throws {
        try await offPool {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if let body = loopbackGet(port: self.clientPort, path: "/health"), body.contains("\"health\":\"true\"")
                {
                    return
                }
                usleep(100_000)
            }
            throw TestServerError("etcd on \(self.endpoint) did not become healthy within 30 s; log: \(self.log())")
        }
    }

    /// The last 2000 characters of etcd's log.
    public func log() -> String { server.logTail }
}
