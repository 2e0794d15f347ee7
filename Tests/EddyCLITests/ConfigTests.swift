import EddyConfig
import Foundation
import Logging
import Testing

/// The configuration file: every key reaches its server's settings, precedence, errors, the docs' table, and the
/// log handler.
@Suite("configuration file")
struct ConfigTests {
    /// A value of `key` that is not its default, as YAML text and as the setting `eddy config show` prints.
    static func sample(_ key: ConfigKey) -> (yaml: String, shown: String) {
        switch key.kind {
        case .text where key.name == "etcd": return ("http://127.0.0.1:2379", "http://127.0.0.1:2379")
        case .text where key.name == "auth": return ("tokens:/tmp/x-tokens.json", "tokens:/tmp/x-tokens.json")
        case .text where key.name == "service-token": return ("s3cr3t", "(set)")  // never shown
        case .text: return ("\"/tmp/x-\(key.name)\"", "/tmp/x-\(key.name)")
        case .size where key.name == "block-size": return ("64K", "64K")  // the cache holds at least 4 blocks
        case .size: return ("3M", "3M")
        case .integer(let range): return ("\(range.lowerBound + 2)", "\(range.lowerBound + 2)")
        case .number(let range):
            let value = range.contains(0.25) ? 0.25 : range.lowerBound + 1
            return ("\(value)", "\(value)")
        case .boolean: return ("true", "true")
        case .address: return ("127.0.0.1:7777", "127.0.0.1:7777")
        case .addresses where key.name == "upstream-ring":  // the home ring's nodes: not this ring's members
            return ("[127.0.0.1:8777, 127.0.0.1:8778]", "127.0.0.1:8777,127.0.0.1:8778")
        case .addresses: return ("[127.0.0.1:7777, 127.0.0.1:7778]", "127.0.0.1:7777,127.0.0.1:7778")
        case .choice(let words):
            let other = words.first { $0 != key.defaultValue }!
            return (other, other)
        case .levels: return ("{eddy.s3: debug, eddy.node: trace}", "eddy.s3=debug,eddy.node=trace")
        case .policy: return ("\"s3fifo:small=0.2\"", "s3fifo:small=0.2")
        case .adminAddress: return ("127.0.0.1:7790", "127.0.0.1:7790")
        case .policies: return ("[lru, \"s3fifo:small=0.2\"]", "lru,s3fifo:small=0.2")
        case .sizes: return ("[3M, 6M]", "3M,6M")
        case .rate: return ("0.25", "0.25")
        }
    }

    /// Whether two settings are the same (numbers compared as numbers: the command prints 0.25 as 0.25 or 0.250).
    static func same(_ a: String, _ b: String, _ key: ConfigKey) -> Bool {
        if case .number = key.kind, let x = Double(a), let y = Double(b) { return x == y }
        return a == b
    }

    static func show(_ command: String, _ arguments: [String], environment: [String: String] = [:]) throws
        -> [String: String]
    {
        let shown = try eddy(["config", "show", command] + arguments, environment: environment)
        try #require(shown.status == 0, "\(shown.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: String])
    }

    @Test("every key of every server command round-trips: set in a file, it is the setting the command runs with")
    func everyKeyRoundTrips() throws {
        for command in ["store", "node", "up"] {
            let keys = ConfigSchema.keys.filter { $0.commands.contains(command) }
            var yaml = ""
            for section in ConfigSchema.sections where keys.contains(where: { $0.section == section }) {
                yaml += "\(section):\n"
                for key in keys where key.section == section { yaml += "  \(key.name): \(Self.sample(key).yaml)\n" }
            }
            let path = temporaryPath("config-\(command)") + ".yaml"
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let check = try eddy(["config", "check", path])
            #expect(check.status == 0, "\(command): \(check.stderr)\n\(yaml)")
            let settings = try Self.show(command, ["--config", path])
            // The command has a setting for each key it takes, and no setting the file cannot give.
            #expect(Set(settings.keys) == Set(keys.map(\.path)), "\(command): \(settings.keys.sorted())")
            for key in keys {
                #expect(
                    Self.same(settings[key.path] ?? "(none)", Self.sample(key).shown, key),
                    "\(command) \(key.path): \(settings[key.path] ?? "(none)")")
            }
            // Unset, every key is at its documented default.
            let defaults = try Self.show(command, command == "up" ? [] : ["--config", Self.required(command)])
            for key in keys where !key.defaultValue.isEmpty {
                #expect(
                    Self.same(defaults[key.path] ?? "(none)", key.defaultValue, key),
                    "\(command) \(key.path) default: \(defaults[key.path] ?? "(none)"), documented \(key.defaultValue)")
            }
        }
    }

    /// A file with only what `command` requires.
    static func required(_ command: String) throws -> String {
        let path = temporaryPath("config-required-\(command)") + ".yaml"
        let yaml =
            command == "store"
            ? "store:\n  data: /tmp/d\n" : "node:\n  listen: 127.0.0.1:7777\n  members: [127.0.0.1:7777]\n"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("the command line wins over EDDY_ variables, which win over the file; EDDY_CONFIG names the file")
    func precedence() throws {
        let path = temporaryPath("config-precedence") + ".yaml"
        try """
        node:
          listen: 127.0.0.1:7001
          members: [127.0.0.1:7001]
          cache-bytes: 2G
          policy: lru
          reader-hints: true
        log:
          level: debug
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let fromFile = try Self.show("node", ["--config", path])
        #expect(fromFile["node.cache-bytes"] == "2G" && fromFile["node.policy"] == "lru")
        #expect(fromFile["node.reader-hints"] == "true" && fromFile["log.level"] == "debug")
        let environment = [
            "EDDY_NODE_CACHE_BYTES": "1G", "EDDY_NODE_POLICY": "sieve", "EDDY_NODE_READER_HINTS": "false",
            "EDDY_CONFIG": path,
        ]
        let fromEnvironment = try Self.show("node", [], environment: environment)
        #expect(fromEnvironment["node.cache-bytes"] == "1G" && fromEnvironment["node.policy"] == "sieve")
        #expect(fromEnvironment["node.reader-hints"] == "false", "a false variable turns off the file's true")
        #expect(fromEnvironment["log.level"] == "debug", "the rest still from the file")
        let fromFlags = try Self.show(
            "node", ["--cache-bytes", "512M", "--reader-hints"], environment: environment)
        #expect(fromFlags["node.cache-bytes"] == "512M" && fromFlags["node.reader-hints"] == "true")
        #expect(fromFlags["node.policy"] == "sieve")

        let bad = try eddy(["config", "show", "node", "--config", path], environment: ["EDDY_NODE_FLUSH_WORKERS": "0"])
        #expect(
            bad.status == 1 && bad.stderr.contains("EDDY_NODE_FLUSH_WORKERS: node.flush-workers = '0'"), "\(bad.stderr)"
        )
    }

    @Test("a bad file: every problem reported with its line, key, value and why; unknown keys are errors")
    func badFiles() throws {
        let yaml = """
            node:
              cache-bytes: 12X
              policy: nope
              members: [127.0.0.1:1, nowhere]
              colour: red
              flush-workers: 100
              reader-hints: maybe
            stor:
              io: auto
            log:
              levels: {eddy.s3: loud}
              format: [json]
            """
        let problems: [ConfigProblem]
        do {
            _ = try ConfigFile.parse(yaml: yaml, source: "bad.yaml")
            Issue.record("a bad file was accepted")
            return
        } catch {
            problems = error.problems
        }
        let expected: [(String, String, String)] = [
            ("bad.yaml:2", "node.cache-bytes", "not a size"),
            ("bad.yaml:3", "node.policy", "unknown policy 'nope'"),
            ("bad.yaml:4", "node.members", "invalid address 'nowhere'"),
            ("bad.yaml:5", "node.colour", "unknown key"),
            ("bad.yaml:6", "node.flush-workers", "from 1 to 64"),
            ("bad.yaml:7", "node.reader-hints", "true or false"),
            ("bad.yaml:8", "stor", "unknown section"),
            ("bad.yaml:11", "log.levels", "'loud'"),
            ("bad.yaml:12", "log.format", "a single value"),
        ]
        #expect(problems.count == expected.count, "\(problems)")
        for (source, key, why) in expected {
            #expect(
                problems.contains { $0.source == source && $0.key == key && $0.reason.contains(why) },
                "\(source) \(key) \(why) in \(problems)")
        }
        #expect(problems.first { $0.key == "node.cache-bytes" }?.value == "12X")

        let path = temporaryPath("config-bad") + ".yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let check = try eddy(["config", "check", path])
        #expect(check.status == 1 && check.stderr.contains("9 problem(s)"), "\(check.stderr)")
        #expect(check.stderr.contains("\(path):5: node.colour: unknown key"), "\(check.stderr)")
        // A server refuses to start on it, with the same messages.
        let node = try eddy(["node", "--config", path])
        #expect(node.status == 1 && node.stderr.contains("node.flush-workers = '100'"), "\(node.stderr)")
        let twice = temporaryPath("config-twice") + ".yaml"
        try "node:\n  policy: lru\n  policy: fifo\n".write(toFile: twice, atomically: true, encoding: .utf8)
        let duplicated = try eddy(["config", "check", twice])
        #expect(duplicated.status == 1 && duplicated.stderr.contains("duplicated key"), "\(duplicated.stderr)")
        let missing = try eddy(["config", "check", path + ".nothing"])
        #expect(missing.status == 1 && missing.stderr.contains("no such file"), "\(missing.stderr)")
        let notYAML = temporaryPath("config-not-yaml") + ".yaml"
        try "node: [unclosed\n".write(toFile: notYAML, atomically: true, encoding: .utf8)
        let broken = try eddy(["config", "check", notYAML])
        #expect(broken.status == 1 && broken.stderr.contains("not valid YAML"), "\(broken.stderr)")
        // Settings that hold only together: a cache smaller than a block.
        let tiny = temporaryPath("config-tiny") + ".yaml"
        try "node:\n  cache-bytes: 64K\n  block-size: 1M\n".write(toFile: tiny, atomically: true, encoding: .utf8)
        let small = try eddy(["config", "check", tiny])
        #expect(small.status == 1 && small.stderr.contains("cache"), "\(small.stderr)")
    }

    @Test("`eddy config example` is a valid file of every key, and docs/operations.md documents each with its default")
    func exampleAndDocs() throws {
        let example = try eddy(["config", "example"])
        #expect(example.status == 0)
        let parsed = try ConfigFile.parse(yaml: example.stdout, source: "example")
        #expect(parsed.values.count == ConfigSchema.keys.filter { !$0.defaultValue.isEmpty }.count)

        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let docs = try String(contentsOf: repository.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        // Rows of the configuration table: | `section.key` | `EDDY_...` | `--flag` | default | meaning |
        var documented: [String: (env: String, defaultValue: String)] = [:]
        for line in docs.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 6, cells[2].hasPrefix("`EDDY_") else { continue }
            let key = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            documented[key] = (
                cells[2].trimmingCharacters(in: CharacterSet(charactersIn: "`")),
                cells[4].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            )
        }
        #expect(Set(documented.keys) == Set(ConfigSchema.keys.map(\.path)), "\(documented.keys.sorted())")
        for key in ConfigSchema.keys {
            #expect(documented[key.path]?.env == key.environmentName, "\(key.path)")
            let shown = documented[key.path]?.defaultValue ?? "?"
            #expect(
                shown == key.defaultValue || (key.defaultValue.isEmpty && (shown == "(none)" || shown == "\"\"")),
                "\(key.path): documented default \(shown), code \(key.defaultValue)")
        }
    }

    @Test("a store started from a file listens where the file says, logs JSON lines, and subsystems get their level")
    func serverFromFile() throws {
        let folder = temporaryPath("config-store")
        let path = folder + ".yaml"
        let port = try freePort()
        try """
        store:
          data: \(folder)
          listen: 127.0.0.1:\(port)
        log:
          format: json
          levels: {eddy.store.server: warning}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let store = try ServerProcess(["store", "--config", path], log: folder + ".log", marker: "eddy store ready")
        defer { store.stop() }
        // One read of the log: the store may log more lines while the test looks, and only whole lines count.
        let log = store.log
        let whole = log.hasSuffix("\n") ? log : String(log[..<(log.lastIndex(of: "\n") ?? log.startIndex)])
        let raw = whole.split(separator: "\n")
        let lines = raw.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String]
        }
        let ready = try #require(lines.first { $0["message"] == "eddy store ready" }, "\(store.log)")
        #expect(ready["listen"] == "127.0.0.1:\(port)" && ready["logger"] == "eddy" && ready["level"] == "info")
        #expect(ready["ts"]?.hasSuffix("Z") == true)
        #expect(lines.contains { $0["logger"] == "eddy.store" }, "other subsystems log at info")
        #expect(!lines.contains { $0["logger"] == "eddy.store.server" }, "eddy.store.server is at warning")
        #expect(lines.count == raw.count, "every line is JSON: \(log)")
    }

    @Test("log levels per subsystem: the longest matching label prefix wins")
    func logLevels() throws {
        let levels = try LogLevels(parsing: "eddy=warning,eddy.node=debug,eddy.node.9090=trace")
        #expect(levels.level(for: "eddy.node.9090", fallback: .info) == .trace)
        #expect(levels.level(for: "eddy.node.9091", fallback: .info) == .debug)
        #expect(levels.level(for: "eddy.nodes", fallback: .info) == .warning, "a prefix ends at a dot")
        #expect(levels.level(for: "other", fallback: .info) == .info)
        #expect(throws: (any Error).self) { try LogLevels(parsing: "eddy.node") }
        let handler = EddyLogHandler(label: "eddy.node", level: .info, format: .json)
        let line = handler.line(
            level: .warning, message: "slow \"disk\"", metadata: ["message": "clash", "path": "/a/b"],
            time: Date(timeIntervalSince1970: 0))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["message"] == "slow \"disk\"" && object["meta.message"] == "clash")
        #expect(object["path"] == "/a/b" && object["ts"] == "1970-01-01T00:00:00.000Z")
    }
}
