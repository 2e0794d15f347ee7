import CacheCore
import Foundation
import StreamModel
import WireProtocol
import Yams

/// One thing wrong with a configuration: the key, the value, where, and why.
public struct ConfigProblem: Error, Sendable, Hashable, CustomStringConvertible {
    /// The key's path (`node.cache-bytes`), or the section or the file when the problem is not one key's.
    public var key: String
    /// The value as written (empty when there is none).
    public var value: String
    /// Where: `FILE:LINE` or the environment variable.
    public var source: String
    /// Why it is refused.
    public var reason: String

    public var description: String {
        let shown = value.isEmpty ? "" : " = '\(value)'"
        return "\(source): \(key)\(shown): \(reason)"
    }
}

/// All the problems of a configuration, reported at once.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    /// Every problem found, in the file's order.
    public var problems: [ConfigProblem]

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// A configuration file read and checked: each key's value as a flag's argument.
///
/// The file is YAML with one mapping per section (docs/operations.md, "Configuration"):
/// ```yaml
/// node:
///   cache-bytes: 2G
///   policy: s3fifo
///   members: [10.0.0.1:9090, 10.0.0.2:9090]
/// log:
///   format: json
///   levels: {eddy.s3: debug}
/// ```
/// Unknown sections and keys are errors, as are values of the wrong kind; every problem is reported, not only
/// the first. (A key given twice is refused by the YAML parser itself, as a duplicated key.)
public struct ConfigFile: Sendable {
    /// A key's value, as the text its flag takes.
    public struct Value: Sendable, Hashable {
        /// The key.
        public var key: ConfigKey
        /// The flag's argument (lists joined by commas, level mappings as `LABEL=LEVEL,...`).
        public var text: String
        /// `FILE:LINE`.
        public var source: String
    }

    /// The keys set, in the file's order. A key set to null (`key:` or `key: ~`) is left at its default.
    public var values: [Value]

    /// Reads and checks the file at `path`.
    /// - Throws: ``ConfigErrors`` with every problem (a missing or unreadable file is one).
    public static func load(path: String) throws(ConfigErrors) -> ConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            let why = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file"
            throw ConfigErrors(problems: [ConfigProblem(key: "(file)", value: "", source: path, reason: why)])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigErrors(problems: [ConfigProblem(key: "(file)", value: "", source: path, reason: "not UTF-8")])
        }
        return try parse(yaml: text, source: path)
    }

    /// Reads and checks YAML text; `source` names it in messages.
    /// - Throws: ``ConfigErrors`` with every problem.
    public static func parse(yaml: String, source: String) throws(ConfigErrors) -> ConfigFile {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigErrors(problems: [
                ConfigProblem(key: "(file)", value: "", source: source, reason: "not valid YAML: \(error)")
            ])
        }
        var problems: [ConfigProblem] = []
        var values: [Value] = []
        guard let root else { return ConfigFile(values: []) }  // an empty file sets nothing
        func at(_ node: Node) -> String { "\(source):\(node.mark?.line ?? 0)" }
        guard let sections = root.mapping else {
            throw ConfigErrors(problems: [
                ConfigProblem(
                    key: "(file)", value: "", source: at(root),
                    reason: "the file must be a mapping of sections (\(ConfigSchema.sections.joined(separator: ", ")))")
            ])
        }
        for (sectionNode, body) in sections {
            let section = sectionNode.scalar?.string ?? "\(sectionNode)"
            guard ConfigSchema.sections.contains(section) else {
                problems.append(
                    ConfigProblem(
                        key: section, value: "", source: at(sectionNode),
                        reason: "unknown section (known: \(ConfigSchema.sections.joined(separator: ", ")))"))
                continue
            }
            if body.null != nil { continue }
            guard let entries = body.mapping else {
                problems.append(
                    ConfigProblem(key: section, value: "", source: at(body), reason: "a section must be a mapping"))
                continue
            }
            for (keyNode, valueNode) in entries {
                let name = keyNode.scalar?.string ?? "\(keyNode)"
                let path = "\(section).\(name)"
                guard let key = ConfigSchema.key(path) else {
                    let known = ConfigSchema.keys.filter { $0.section == section }.map(\.name)
                    problems.append(
                        ConfigProblem(
                            key: path, value: "", source: at(keyNode),
                            reason: "unknown key (\(section) takes: \(known.joined(separator: ", ")))"))
                    continue
                }
                if valueNode.null != nil { continue }
                do throws(ConfigProblem) {
                    let text = try flatten(valueNode, key: key, source: at(valueNode))
                    try check(text, key: key, source: at(valueNode))
                    values.append(Value(key: key, text: text, source: at(valueNode)))
                } catch {
                    problems.append(error)
                }
            }
        }
        guard problems.isEmpty else { throw ConfigErrors(problems: problems) }
        return ConfigFile(values: values)
    }

    /// The node's value as one flag argument: a scalar as is, a list of addresses joined by commas, a mapping of
    /// levels as `LABEL=LEVEL,...`.
    static func flatten(_ node: Node, key: ConfigKey, source: String) throws(ConfigProblem) -> String {
        switch (key.kind, node) {
        case (_, .scalar(let s)):
            return s.string
        case (.addresses, .sequence(let items)), (.sizes, .sequence(let items)), (.policies, .sequence(let items)):
            var out: [String] = []
            for item in items {
                guard let s = item.scalar else {
                    throw ConfigProblem(
                        key: key.path, value: "", source: source, reason: "each member of the list must be one value")
                }
                out.append(s.string)
            }
            return out.joined(separator: ",")
        case (.levels, .mapping(let pairs)):
            var out: [String] = []
            for (label, level) in pairs {
                guard let l = label.scalar?.string, let v = level.scalar?.string else {
                    throw ConfigProblem(
                        key: key.path, value: "", source: source, reason: "each entry must be LABEL: LEVEL")
                }
                out.append("\(l)=\(v)")
            }
            return out.joined(separator: ",")
        case (.levels, _):
            throw ConfigProblem(
                key: key.path, value: "", source: source, reason: "must be a mapping of logger label to level")
        default:
            throw ConfigProblem(key: key.path, value: "", source: source, reason: "must be a single value")
        }
    }

    /// Checks a value against its key's kind.
    /// - Throws: the problem, naming the key, the value and why.
    public static func check(_ text: String, key: ConfigKey, source: String) throws(ConfigProblem) {
        func refuse(_ why: String) -> ConfigProblem {
            ConfigProblem(key: key.path, value: text, source: source, reason: why)
        }
        switch key.kind {
        case .text:
            break
        case .size:
            do { _ = try parseSize(text, what: key.path) } catch {
                throw refuse("not a size (a number with K, M or G)")
            }
        case .integer(let range):
            guard let n = Int(text), range.contains(n) else {
                throw refuse("must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
        case .number(let range):
            guard let n = Double(text), range.contains(n) else {
                throw refuse("must be a number from \(range.lowerBound) to \(range.upperBound)")
            }
        case .boolean:
            guard text == "true" || text == "false" else { throw refuse("must be true or false") }
        case .address:
            do { _ = try ServerAddress(parsing: text) } catch { throw refuse(error.message) }
        case .addresses:
            let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            guard !parts.isEmpty, !text.isEmpty else { throw refuse("must name at least one HOST:PORT") }
            for part in parts {
                do { _ = try ServerAddress(parsing: String(part)) } catch { throw refuse(error.message) }
            }
        case .choice(let words):
            guard words.contains(text) else { throw refuse("must be one of \(words.joined(separator: ", "))") }
        case .levels:
            do { _ = try LogLevels(parsing: text) } catch { throw refuse(error.message) }
        case .policy:
            do { _ = try PolicyKind.parse(text) } catch { throw refuse(error.message) }
        case .adminAddress:
            do { _ = try AdminListen(parsing: text) } catch { throw refuse(error.message) }
        case .policies:
            for item in text.split(separator: ",", omittingEmptySubsequences: false) {
                do { _ = try PolicyKind.parse(String(item)) } catch { throw refuse(error.message) }
            }
        case .sizes:
            for item in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let n = try? parseSize(String(item), what: key.path), n > 0 else {
                    throw refuse("'\(item)' is not a size (a positive number with K, M or G)")
                }
            }
        case .rate:
            guard text == "auto" || Double(text).map({ $0 > 0 && $0 <= 1 }) == true else {
                throw refuse("must be auto or a number above 0 and at most 1")
            }
        }
    }

    /// The flags this file gives `command` (`store`, `node` or `up`), in the file's order. A `false` boolean
    /// gives the flag's `--no-` form, so a file can turn off what the environment turned on and back.
    public func arguments(for command: String) -> [String] {
        values.filter { $0.key.commands.contains(command) }.flatMap { Self.arguments($0.key, $0.text) }
    }

    /// The flags for one key's value.
    static func arguments(_ key: ConfigKey, _ text: String) -> [String] {
        if case .boolean = key.kind {
            return [text == "true" ? key.flag : "--no-" + key.flag.dropFirst(2)]
        }
        return [key.flag, text]
    }

    /// The flags the environment gives `command`: each `EDDY_SECTION_KEY` variable of a key the command takes.
    /// - Throws: ``ConfigErrors`` for values of the wrong kind, naming the variable.
    public static func environmentArguments(for command: String, environment: [String: String]) throws(ConfigErrors)
        -> [String]
    {
        var out: [String] = []
        var problems: [ConfigProblem] = []
        for key in ConfigSchema.keys where key.commands.contains(command) {
            guard let text = environment[key.environmentName] else { continue }
            do throws(ConfigProblem) {
                try check(text, key: key, source: key.environmentName)
                out += arguments(key, text)
            } catch {
                problems.append(error)
            }
        }
        guard problems.isEmpty else { throw ConfigErrors(problems: problems) }
        return out
    }

    /// The server commands whose flags a configuration can give.
    public static let commands: Set<String> = ["store", "node", "up"]

    /// A server command's arguments with its configuration in front: the file's flags (from `--config FILE`, or
    /// `EDDY_CONFIG`), then the environment's, then the command line's. A flag given twice takes its last value,
    /// so the command line wins over the environment, which wins over the file. Other commands' arguments are
    /// returned unchanged.
    /// - Parameter arguments: the process's arguments after the program name, the command first.
    /// - Throws: ``ConfigErrors`` for a bad file or variable.
    public static func expand(_ arguments: [String], environment: [String: String]) throws(ConfigErrors) -> [String] {
        guard let command = arguments.first, commands.contains(command) else { return arguments }
        var path = environment["EDDY_CONFIG"]
        var i = 1
        while i < arguments.count {
            let a = arguments[i]
            if a == "--config", i + 1 < arguments.count {
                path = arguments[i + 1]
                i += 1
            } else if a.hasPrefix("--config=") {
                path = String(a.dropFirst("--config=".count))
            } else if a == "--" {
                break
            }
            i += 1
        }
        let file = try path.map { (p: String) throws(ConfigErrors) -> [String] in
            try load(path: p).arguments(for: command)
        }
        let env = try environmentArguments(for: command, environment: environment)
        return [command] + (file ?? []) + env + arguments.dropFirst()
    }

    /// A commented YAML file of every key at its default, for `eddy config example`.
    public static func example() -> String {
        var out = "# Eddy configuration (docs/operations.md, \"Configuration\"). Every key is optional; shown at its\n"
        out += "# default, or commented out when it has none. Environment: EDDY_SECTION_KEY; flags win over both.\n"
        for section in ConfigSchema.sections {
            out += "\n\(section):\n"
            for key in ConfigSchema.keys where key.section == section {
                out +=
                    "  # \(key.help) (\(key.environmentName); \(key.flag) of eddy \(key.commands.sorted().joined(separator: ", ")))\n"
                let value: String
                switch key.kind {
                case .addresses where !key.defaultValue.isEmpty, .sizes where !key.defaultValue.isEmpty,
                    .policies where !key.defaultValue.isEmpty:
                    value = "[" + key.defaultValue.split(separator: ",").joined(separator: ", ") + "]"
                default:
                    value = key.defaultValue
                }
                out += value.isEmpty ? "  # \(key.name):\n" : "  \(key.name): \(value)\n"
            }
        }
        return out
    }
}
