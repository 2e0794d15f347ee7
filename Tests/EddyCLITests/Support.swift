import EddyTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The `eddy` executable built beside this test bundle (or `EDDY_BINARY`).
let eddyBinary: String = {
    if let path = ProcessInfo.processInfo.environment["EDDY_BINARY"] { return path }
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [here, here.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("eddy").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return ".build/debug/eddy"
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

/// A running `eddy store` on a free loopback port.
final class StoreProcess {
    let process = Process()
    let data: String
    let logPath: String
    private(set) var address = ""

    init(data: String) throws {
        self.data = data
        logPath = data + ".log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: eddyBinary)
        process.arguments = ["store", "--data", data, "--listen", "127.0.0.1:0"]
        process.environment = ProcessInfo.processInfo.environment.merging(testAdminEnvironment) { a, _ in a }
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").first(where: { $0.contains("eddy store ready") }),
                let range = line.range(of: #"listen=\S+"#, options: .regularExpression)
            {
                address = String(line[range].dropFirst("listen=".count))
                return
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw CLIError("eddy store did not start: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
    }

    /// Sends SIGTERM and waits; returns the exit status.
    func stop() -> Int32 {
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func temporaryPath(_ tag: String) -> String {
    NSTemporaryDirectory() + "eddy-\(tag)-" + UUID().uuidString
}

func freePort() throws -> Int { try freeLoopbackPort() }

/// A running `eddy` server process (a store or a node), ready once its log says `marker`.
final class ServerProcess {
    let process = Process()
    let logPath: String
    let arguments: [String]

    /// Where its standard output goes (nil: nowhere).
    let outputPath: String?

    /// Starts `eddy ARGUMENTS`, its log (stderr) in `log` and its output in `output` (nil: discarded), and waits
    /// until either says `marker`.
    init(
        _ arguments: [String], log: String, marker: String, environment: [String: String] = [:],
        output: String? = nil
    ) throws {
        self.arguments = arguments
        logPath = log
        outputPath = output
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: eddyBinary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(testAdminEnvironment) { a, _ in a }
            .merging(environment) { $1 }
        process.standardError = FileHandle(forWritingAtPath: logPath)
        if let output {
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: output)
        } else {
            process.standardOutput = FileHandle.nullDevice
        }
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if log.contains(marker) || self.log.contains(marker) || self.output.contains(marker) {
                return
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        throw CLIError("eddy \(arguments.first ?? "") did not start: \(self.log)")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// What it wrote to standard output so far (empty when it is discarded).
    var output: String { outputPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    /// SIGKILL, no goodbye.
    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM and wait.
    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

/// A store and cache nodes as real processes on free loopback ports, under one temporary folder.
final class Ring {
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
