import ArgumentParser
import CacheNode
import EddyConfig
import Foundation
import WireProtocol

struct Config: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check, show or write out the configuration file of the servers (docs/operations.md).",
        subcommands: [ConfigCheck.self, ConfigShow.self, ConfigExample.self])
}

struct ConfigCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Report every problem of a configuration file: the key, the value and why.",
        discussion: """
            Unknown sections and keys are errors. A file that sets a server's own keys (store.data, node.listen,
            node.members, up.*) is also checked as that server's whole command line, with the EDDY_ environment
            variables added as the server would add them (EDDY_NODE_LISTEN=... eddy config check FILE checks a
            shared file as one machine's node). Exit status 0 when the file is good, 1 otherwise.
            """)

    @Argument(help: "The YAML file.") var file: String

    func run() async throws {
        let config: ConfigFile
        do {
            config = try ConfigFile.load(path: file)
        } catch {
            for p in error.problems { FileHandle.standardError.write(Data("\(p)\n".utf8)) }
            FileHandle.standardError.write(Data("\(file): \(error.problems.count) problem(s)\n".utf8))
            throw ExitCode(1)
        }
        var problems: [String] = []
        // Each server the file (or the environment) describes, its own keys set, is checked as that server's whole
        // command line; the settings `eddy up` shares with them (cache against block size, the journal I/O path)
        // always are.
        let environment = ProcessInfo.processInfo.environment
        func sets(_ paths: [String]) -> Bool {
            config.values.contains { paths.contains($0.key.path) }
                || ConfigSchema.keys.contains { paths.contains($0.path) && environment[$0.environmentName] != nil }
        }
        let describes = [
            "store": sets(["store.data"]), "node": sets(["node.listen", "node.members", "node.membership"]), "up": true,
        ]
        for (name, type) in configurableServers where describes[name] == true {
            do {
                let arguments =
                    config.arguments(for: name)
                    + (try ConfigFile.environmentArguments(for: name, environment: environment))
                try type.parse(arguments).check()
            } catch {
                problems.append("as `eddy \(name)`: \(type.message(for: error))")
            }
        }
        guard problems.isEmpty else {
            for p in problems { FileHandle.standardError.write(Data("\(file): \(p)\n".utf8)) }
            throw ExitCode(1)
        }
        print("\(file): OK, \(config.values.count) key(s) set")
    }
}

struct ConfigShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the settings a server command would run with, as JSON keyed by the file's keys.",
        discussion: """
            The file (--config or EDDY_CONFIG), the EDDY_... variables and the flags are applied as the command
            would: eddy config show node --config eddy.yaml --cache-bytes 1G
            """)

    @Argument(help: "store, node or up.") var command: String
    @Argument(parsing: .allUnrecognized, help: "The command's flags.") var arguments: [String] = []

    func run() async throws {
        guard let type = configurableServers.first(where: { $0.name == command })?.type else {
            throw ValidationError("'\(command)' is not a server command: use store, node or up")
        }
        let expanded: [String]
        do {
            expanded = try ConfigFile.expand([command] + arguments, environment: ProcessInfo.processInfo.environment)
        } catch {
            reportConfigurationErrors(error)
            throw ExitCode(1)
        }
        let settings = try type.parse(Array(expanded.dropFirst())).settings
        let data = try JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct ConfigExample: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "example",
        abstract: "Print a configuration file with every key at its default, commented.")

    func run() async throws { print(ConfigFile.example(), terminator: "") }
}

/// The server commands a configuration file configures, by the name `ConfigFile.expand` knows them by.
let configurableServers: [(name: String, type: any (ParsableCommand & ConfigurableServer).Type)] = [
    ("store", Store.self), ("node", Node.self), ("up", Up.self),
]

/// Prints a configuration's problems, one per line, under `eddy: configuration:`.
func reportConfigurationErrors(_ error: ConfigErrors) {
    FileHandle.standardError.write(Data("eddy: configuration:\n\(error)\n".utf8))
}

/// A server command whose settings can be listed by configuration key.
protocol ConfigurableServer {
    /// Every setting, keyed by the configuration file's key (`node.cache-bytes`), as the flag's text.
    var settings: [String: String] { get }
    /// Checks what parsing alone cannot (settings that must hold together).
    func check() throws
}

extension StoreOptions {
    /// Checks the settings without opening a store.
    func check() throws {
        _ = try backend()
        _ = try parseSize(checkpointBytes, what: "--checkpoint-bytes")
    }

    var settings: [String: String] { ["store.io": io, "store.checkpoint-bytes": checkpointBytes] }
}

extension NodeOptions {
    var settings: [String: String] {
        [
            "node.cache-bytes": cacheBytes, "node.policy": policy, "node.block-size": blockSize,
            "node.near-cache-share": "\(nearCacheShare)", "node.cache-shards": "\(cacheShards)", "node.zone": zone,
            "node.reader-hints": "\(readerHints)", "node.http-cors-origins": httpCorsOrigins,
            "node.trace-out": traceOut ?? "", "node.whatif": "\(whatIf)", "node.whatif-rate": whatIfRate,
            "node.whatif-cpu-budget": "\(whatIfCPUBudget)",
            "node.whatif-sizes": whatIfSizes ?? "", "node.whatif-policies": whatIfPolicies ?? "",
        ]
    }
}

extension MembershipOptions {
    var settings: [String: String] {
        [
            "node.membership": membership, "node.members": members ?? "", "node.etcd": etcd ?? "",
            "node.etcd-prefix": etcdPrefix, "node.etcd-lease-ttl": "\(etcdLeaseTtl)",
        ]
    }
}

extension WriteBackOptions {
    var settings: [String: String] {
        [
            "node.object-store": objects.objectStore ?? "", "node.s3-endpoint": objects.s3.s3Endpoint ?? "",
            "node.s3-region": objects.s3.s3Region ?? "", "node.s3-path-style": "\(objects.s3.s3PathStyle)",
            "node.s3-timeout": "\(objects.s3.s3Timeout)", "node.s3-ca": objects.s3.s3Ca ?? "",
            "node.retain-bytes": retainBytes ?? "",
            "node.retain-seconds": retainSeconds.map { "\($0)" } ?? "", "node.flush-idle": "\(flushIdle)",
            "node.max-flush-lag": maxFlushLag ?? "", "node.flush-workers": "\(flushWorkers)",
            "node.object-blocks": "\(objectBlocks)",
        ]
    }
}

extension ServerProcessOptions {
    var settings: [String: String] {
        [
            "log.level": "\(logLevel)", "log.format": logFormat.rawValue, "log.levels": logLevels,
            "shutdown.grace-seconds": "\(shutdownGrace)",
        ]
    }
}

extension Store: ConfigurableServer {
    var settings: [String: String] {
        options.settings.merging(process.settings) { a, _ in a }.merging(
            [
                "store.data": data, "store.listen": listen, "store.admin-listen": process.adminListen,
            ].merging(security.settings.filter { $0.key != "security.service-token" }) { a, _ in a }
        ) {
            a, _ in a
        }
    }
    func check() throws {
        try options.check()
        _ = try process.admin(beside: try ServerAddress(parsing: listen))
    }
}

extension Node: ConfigurableServer {
    var settings: [String: String] {
        var all = options.settings.merging(writeBack.settings) { a, _ in a }.merging(process.settings) { a, _ in a }
            .merging(ring.settings) { a, _ in a }.merging(security.settings) { a, _ in a }
        all["node.listen"] = listen
        all["node.store"] = store
        all.merge(upstream.settings("node")) { a, _ in a }
        all["node.admin-listen"] = process.adminListen
        all["node.http-listen"] = httpListen
        return all
    }
    func check() throws {
        var c = try ring.configuration(listen: listen, store: store)
        try upstream.apply(to: &c)
        try options.apply(to: &c)
        _ = try httpAddress(listen: c.listen)
    }
}

extension Up: ConfigurableServer {
    var settings: [String: String] {
        var all = options.settings.merging(nodeOptions.settings) { a, _ in a }
            .merging(writeBack.settings) { a, _ in a }.merging(process.settings) { a, _ in a }
            .merging(security.settings) { a, _ in a }
        all["up.data"] = data
        all["up.store"] = store
        all["up.nodes"] = nodes
        all["up.admin-listen"] = process.adminListen
        all["up.http-listen"] = httpListen
        all.merge(upstream.settings("up")) { a, _ in a }
        return all
    }
    func check() throws {
        try options.check()
        let members = try ServerAddress.list(parsing: nodes)
        var c = NodeConfiguration(listen: members[0], store: try ServerAddress(parsing: store), members: members)
        try upstream.apply(to: &c)
        try nodeOptions.apply(to: &c)
    }
}
