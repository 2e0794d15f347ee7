import CacheNode
import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import ObjectStorage
import StreamModel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `scripts/fault-proxy.py` in front of an S3 server: it fails a share of the requests (503 SlowDown, 500,
/// connection resets, hangs) and every request whose path holds a poison text.
final class FaultProxy {
    let port: Int
    let process: ChildProcess

    init(upstream: Int, rate: Double) throws {
        port = try freePort()
        process = try ChildProcess(
            "python3",
            [
                WriteBackTests.repository + "/scripts/fault-proxy.py", "--listen", "127.0.0.1:\(port)",
                "--upstream", "127.0.0.1:\(upstream)", "--rate", "\(rate)", "--hang", "20",
            ], error: .file(NSTemporaryDirectory() + "eddy-fault-proxy-\(port).log"))
        let deadline = ContinuousClock.now + .seconds(20)
        while (try? control("stats")) == nil {
            guard ContinuousClock.now < deadline, process.isRunning else {
                throw CLIError("the fault proxy did not start")
            }
            usleep(100_000)
        }
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Sends a control request (`rate/0.3`, `poison/TEXT`, `stats`); returns the proxy's JSON counts.
    @discardableResult
    func control(_ path: String) throws -> [String: Any] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard withLoopbackAddress(port: port, { connect(fd, $0, $1) }) == 0 else {
            throw CLIError("fault proxy not listening")
        }
        let request = Array("GET /__fault/\(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw CLIError("fault proxy write") }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        let text = String(decoding: answer, as: UTF8.self)
        guard let body = text.range(of: "\r\n\r\n").map({ text[$0.upperBound...] }),
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        else { throw CLIError("fault proxy answered \(text)") }
        return json
    }

    func stop() {
        process.kill()
    }
}

@Suite("write-back under object-store faults, as real processes", .serialized)
struct WriteBackFaultTests {
    /// Sums a stats key over the nodes; nil when a node did not answer with it.
    static func sum(_ key: String, _ ring: Ring) -> Int? {
        var total = 0
        for node in ring.nodeAddresses {
            guard let stats = try? eddy(["admin", "stats", "--server", node, "--format", "json"]),
                stats.status == 0,
                let json = try? JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any],
                let value = json[key] as? Int
            else { return nil }
            total += value
        }
        return total
    }

    /// Every node's dead letters, one line each (`ID queue attempts=N ... segment=...`).
    static func deadLetters(_ ring: Ring) throws -> [(node: String, line: String)] {
        var out: [(String, String)] = []
        for node in ring.nodeAddresses {
            let listed = try eddy(["admin", "dlq", "list", "--server", node]).stdout
            for line in listed.split(separator: "\n") where line.contains("segment=") {
                out.append((node, String(line)))
            }
        }
        return out
    }

    @Test(
        "30 % of S3 requests fail or hang and SeaweedFS is down a minute: appends and reads go on, flush lag is reported, dead letters only after 5 attempts, a poison task reaches the DLQ, and after redrive every block is in the bucket byte-identical"
    )
    func faultsAndAnOutage() async throws {
        let seaweed = try SeaweedFS()  // its own: the test stops it
        defer { seaweed.stop() }
        try await seaweed.waitUntilReady()
        let bucket = "eddy-faults-" + UUID().uuidString.lowercased().prefix(8)
        let objects = try await seaweed.makeStore(bucket: bucket)
        let proxy = try FaultProxy(upstream: seaweed.s3Port, rate: 0.3)
        defer { proxy.stop() }
        // Only its block objects: its manifest stays readable, so its flush is planned and then fails.
        try proxy.control("poison/ft/poison/00000000/")
        let ring = try Ring(
            nodes: 3,
            nodeArguments: [
                "--object-store", "s3://\(bucket)/eddy", "--s3-endpoint", proxy.endpoint, "--s3-path-style",
                "--s3-timeout", "2", "--flush-idle", "1",
            ], environment: ["AWS_ACCESS_KEY_ID": seaweed.accessKey, "AWS_SECRET_ACCESS_KEY": seaweed.secretKey])
        defer { ring.stopAll() }
        let store = try await RingTests.client([ring.storeAddress], timeout: .seconds(60))
        defer { Task { await store.close() } }
        let events = try StreamName(scope: "ft", stream: "events")
        let poison = try StreamName(scope: "ft", stream: "poison")
        _ = try await store.send(.createStream(events, segments: 3))
        _ = try await store.send(.createStream(poison, segments: 1))
        try await RingTests.fill(store, events, segments: 3, count: 4_000, size: 1_000)  // about 12 MiB
        try await RingTests.fill(store, poison, segments: 1, count: 100)

        // Faults for a while, then SeaweedFS down for a minute: the nodes keep answering, lag is reported.
        var lags: [Int] = []
        func sample() throws {
            let lag = try #require(Self.sum("flush_lag_bytes", ring), "every node reports flush_lag_bytes")
            lags.append(lag)
        }
        for _ in 0..<5 {
            try sample()
            try await Task.sleep(for: .seconds(1))
        }
        seaweed.stop()
        let outageEnd = ContinuousClock.now + .seconds(60)
        // Appends and reads do not wait for object storage (and what is appended now cannot be flushed before
        // the outage ends, whatever the faults let through before it).
        let appended = try eddy(
            ["append", "ft/events", "--server", ring.nodeAddresses[0]], input: "during the outage\n")
        #expect(appended.status == 0, "\(appended.stderr)")
        let read = try eddy(["read", "ft/events", "--server", ring.nodeAddresses[1]])
        #expect(read.status == 0 && read.stdout.contains("during the outage"))
        var lagsInOutage: [Int] = []
        while ContinuousClock.now < outageEnd {
            try sample()
            lagsInOutage.append(lags.last!)
            try await Task.sleep(for: .seconds(3))
        }
        #expect(lagsInOutage.allSatisfy { $0 > 0 }, "unflushed bytes are reported through the outage: \(lagsInOutage)")
        try seaweed.start()
        try await seaweed.waitUntilReady()

        // The poison task (every request of its segment fails) reaches the dead letters after its 5 attempts.
        let deadline = ContinuousClock.now + .seconds(180)
        var dead = try Self.deadLetters(ring)
        while !dead.contains(where: { $0.line.contains("segment=ft/poison/00000000") }) {
            guard ContinuousClock.now < deadline else {
                throw CLIError("no dead letter for ft/poison: \(dead); logs: \(ring.nodes.map(\.log).joined())")
            }
            try await Task.sleep(for: .seconds(1))
            dead = try Self.deadLetters(ring)
        }
        #expect(dead.allSatisfy { $0.line.contains("attempts=5") }, "dead letters only after max attempts: \(dead)")
        #expect(try #require(Self.sum("dead_letters", ring)) >= 1)
        let faults = try proxy.control("stats")
        let injected = ["503", "500", "reset", "hang"].map { faults[$0] as? Int ?? 0 }
        #expect(injected.allSatisfy { $0 > 0 }, "each kind of fault was injected: \(faults)")

        // The faults end; a redrive finishes what died. Every block is then in the bucket, byte-identical.
        try proxy.control("poison/")
        try proxy.control("rate/0")
        for node in ring.nodeAddresses {
            let redrive = try eddy(["admin", "dlq", "redrive", "--all", "--server", node])
            #expect(redrive.status == 0, "\(redrive.stderr)")
        }
        for name in [events, poison] {
            let lengths = try await WriteBackTests.lengths(store, name, segments: name == events ? 3 : 1)
            _ = try await WriteBackTests.waitUntilFlushed(
                objects, prefix: "eddy", name, lengths: lengths, within: .seconds(240), ring: ring)
            let check = try await WriteBackTests.verifyWithBoto3(
                store, name, lengths: lengths, seaweed: seaweed, bucket: String(bucket), prefix: "eddy", ring: ring)
            let output = check.stdout + check.stderr
            #expect(check.status == 0 && output.contains("OK"), "boto3 check of \(name): \(output)")
        }
        #expect(try Self.deadLetters(ring).isEmpty)
    }
}
