import EddyTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The `eddy` executable built beside this test bundle (or `EDDY_BINARY`).
let eddyBinary: String = {
    if let path = ProcessInfo.processInfo.environment["EDDY_BINARY"] { return path }
    return builtProduct("eddy") ?? ".build/debug/eddy"
}()

/// Runs `eddy ARGS` with `input` on stdin (and `environment` added to this process's) and waits for it.
func eddy(_ arguments: [String], input: String = "", environment: [String: String] = [:]) throws -> CommandResult {
    try runProgram(eddyBinary, arguments, input: input, environment: environment)
}

/// `eddy ARGS` from an async test: the wait happens on a thread of its own, not on Swift's cooperative pool,
/// whose two threads the in-process servers of other tests need meanwhile (their heartbeats).
func eddyAsync(_ arguments: [String], input: String = "", environment: [String: String] = [:]) async throws
    -> CommandResult
{
    try await offPool { try eddy(arguments, input: input, environment: environment) }
}

/// Server processes started by the tests put their admin servers on a port of the system's choice (the default,
/// the protocol port + 100, could be another test's port); the environment keeps a test's own setting.
let testAdminEnvironment = ["EDDY_STORE_ADMIN_LISTEN": "127.0.0.1:0", "EDDY_NODE_ADMIN_LISTEN": "127.0.0.1:0"]

/// A running `eddy store` on a port of the system's choice.
final class StoreProcess {
    let process: ServerProcess
    let data: String
    private(set) var address = ""

    init(data: String) throws {
        self.data = data
        process = try ServerProcess(
            ["store", "--data", data, "--listen", "127.0.0.1:0"], log: data + ".log", marker: "eddy store ready")
        let line = process.log.split(separator: "\n").first { $0.contains("eddy store ready") } ?? ""
        guard let range = line.range(of: #"listen=\S+"#, options: .regularExpression) else {
            throw CLIError("eddy store did not say where it listens: \(process.log)")
        }
        address = String(line[range].dropFirst("listen=".count))
    }

    /// Sends SIGTERM and waits; returns the exit status.
    func stop() -> Int32 { process.stop() }

    var log: String { process.log }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func temporaryPath(_ tag: String) -> String {
    NSTemporaryDirectory() + "eddy-\(tag)-" + UUID().uuidString
}

func freePort() throws -> Int { try freeLoopbackPort() }

/// A running `eddy` server process (a store or a node), ready once its log says `marker`: a ``ChildProcess``, so
/// it dies with the test process however that ends.
final class ServerProcess {
    let process: ChildProcess
    let logPath: String
    let arguments: [String]

    /// Where its standard output goes (nil: nowhere).
    let outputPath: String?

    /// Starts `eddy ARGUMENTS`, its log (stderr) in `log` and its output in `output` (nil: discarded), and waits
    /// until either says `marker`.
    init(
        _ arguments: [String], log: String, marker: String, environment: [String: String] = [:],
        output: String? = nil, prefix: [String] = []
    ) throws {
        self.arguments = arguments
        logPath = log
        outputPath = output
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        if let output { _ = FileManager.default.createFile(atPath: output, contents: nil) }
        let inherited = ProcessInfo.processInfo.environment
        // `prefix` runs eddy through another program (`ip netns exec NS`), which execs it in its place.
        process = try ChildProcess(
            prefix.first ?? eddyBinary,
            prefix.isEmpty ? arguments : Array(prefix.dropFirst()) + [eddyBinary] + arguments,
            environment: testAdminEnvironment.filter { inherited[$0.key] == nil }.merging(environment) { $1 },
            output: output.map { .file($0) } ?? .null, error: .file(log))
        // 60 s: a debug build's start on 2 cores busy with two test processes has once taken over 30 s.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if self.log.contains(marker) || self.output.contains(marker) { return }
            if !process.isRunning { break }
            usleep(20_000)
        }
        process.kill()
        throw CLIError("eddy \(arguments.first ?? "") did not start: \(self.log)")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// What it wrote to standard output so far (empty when it is discarded).
    var output: String { outputPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    /// The server's process ID.
    var pid: pid_t { process.pid }

    /// Whether it still runs.
    var isRunning: Bool { process.isRunning }

    /// SIGKILL, no goodbye.
    func kill() { process.kill() }

    /// SIGTERM and wait; the exit status.
    @discardableResult
    func stop() -> Int32 { process.terminate() }
}

/// A store and cache nodes as real processes on free loopback ports, under one temporary folder. Used by one test
/// at a time (unchecked Sendable: a test's helper threads may restart its nodes).
final class Ring: @unchecked Sendable {
    let folder = temporaryPath("ring")
    let storeAddress: String
    let nodeAddresses: [String]
    private(set) var store: ServerProcess
    private(set) var nodes: [ServerProcess] = []
    let nodeArguments: [String]
    let storeArguments: [String]
    let environment: [String: String]
    /// The nodes' membership flags: the static list of every node, or etcd's.
    let membershipArguments: [String]

    /// Starts a store and the first `running` of `count` nodes (all `count` are members, or, with `etcd`
    /// (endpoint and key prefix), each registers there); nodes get `nodeArguments` and `environment` (added to
    /// this process's).
    init(
        nodes count: Int = 3, running: Int? = nil, nodeArguments: [String] = [], environment: [String: String] = [:],
        etcd: (endpoint: String, prefix: String)? = nil, storeArguments: [String] = []
    ) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        storeAddress = "127.0.0.1:\(try freePort())"
        nodeAddresses = try (0..<count).map { _ in "127.0.0.1:\(try freePort())" }
        self.nodeArguments = nodeArguments
        self.storeArguments = storeArguments
        self.environment = environment
        membershipArguments =
            etcd.map { ["--membership", "etcd", "--etcd", $0.endpoint, "--etcd-prefix", $0.prefix] }
            ?? ["--members", nodeAddresses.joined(separator: ",")]
        store = try ServerProcess(
            ["store", "--data", folder + "/store", "--listen", storeAddress] + storeArguments,
            log: folder + "/store.log", marker: "eddy store ready")
        for i in 0..<(running ?? count) { nodes.append(try startNode(i)) }
    }

    /// Starts node `i` and keeps it with the others.
    func addNode(_ i: Int) throws {
        nodes.append(try startNode(i))
    }

    func startNode(_ i: Int) throws -> ServerProcess {
        try ServerProcess(
            ["node", "--listen", nodeAddresses[i], "--store", storeAddress] + membershipArguments + nodeArguments,
            log: folder + "/node-\(i).log", marker: "eddy node ready", environment: environment)
    }

    /// SIGKILLs node `i` and starts it again on the same address (its cache starts empty).
    func restartNode(_ i: Int) throws {
        nodes[i].kill()
        nodes[i] = try startNode(i)
    }

    /// Starts the store again on the same address and data (after a stop or kill).
    func restartStore() throws {
        store = try ServerProcess(
            ["store", "--data", folder + "/store", "--listen", storeAddress] + storeArguments,
            log: folder + "/store-2.log", marker: "eddy store ready")
    }

    func stopAll() {
        for n in nodes { n.stop() }
        store.stop()
        if ProcessInfo.processInfo.environment["EDDY_KEEP_TEST_LOGS"] == nil {
            try? FileManager.default.removeItem(atPath: folder)
        }
    }
}

/// The variables the `export EDDY_TOKEN=... EDDY_TLS_CA=...` line of `eddy up --secure`'s output sets (empty when
/// there is no such line).
func secureEnvironment(_ output: String) -> [String: String] {
    let exports = output.split(separator: "\n").first { $0.contains("export EDDY_TOKEN=") } ?? ""
    var environment: [String: String] = [:]
    for assignment in exports.split(separator: " ").dropFirst() {
        let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
        if parts.count == 2 { environment[parts[0]] = parts[1] }
    }
    return environment
}
