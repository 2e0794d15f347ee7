import Foundation
import Logging
import StreamModel

/// Levels per subsystem: logger labels (or their prefixes) and the level each logs at, parsed from
/// `LABEL=LEVEL,LABEL=LEVEL` (`--log-levels eddy.node=debug,eddy.s3=trace`). The longest matching prefix wins; a
/// prefix matches a label equal to it or starting with it and a dot.
public struct LogLevels: Sendable {
    /// Label prefix and level, longest prefix first.
    public private(set) var rules: [(String, Logger.Level)]

    /// Parses `LABEL=LEVEL,...`; empty text gives no rules.
    /// - Throws: ``EddyError/Code/invalidArgument`` for an entry without `=` or an unknown level.
    public init(parsing text: String) throws(EddyError) {
        var rules: [(String, Logger.Level)] = []
        for entry in text.split(separator: ",") where !entry.isEmpty {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw EddyError(.invalidArgument, "log level '\(entry)' is not LABEL=LEVEL")
            }
            guard let level = Logger.Level(rawValue: String(parts[1])) else {
                throw EddyError(
                    .invalidArgument,
                    "log level '\(parts[1])' of \(parts[0]) is not one of trace, debug, info, notice, warning, error, critical"
                )
            }
            rules.append((String(parts[0]), level))
        }
        self.rules = rules.sorted { $0.0.count > $1.0.count }
    }

    /// The level for `label`: its longest matching rule's, else `fallback`.
    public func level(for label: String, fallback: Logger.Level) -> Logger.Level {
        for (prefix, level) in rules where label == prefix || label.hasPrefix(prefix + ".") { return level }
        return fallback
    }
}

/// Eddy's log handler: one line per event on stderr, as text or as a JSON object.
///
/// Text: `2026-11-22T10:15:02.123Z info eddy.node: eddy node ready listen=127.0.0.1:9090 store=...` (UTC).
/// JSON: `{"ts":"...","level":"info","logger":"eddy.node","message":"eddy node ready","listen":"127.0.0.1:9090"}`
/// (metadata as string fields beside the fixed ones; a metadata key that clashes with one gets a `meta.` prefix).
public struct EddyLogHandler: LogHandler {
    /// How events are written.
    public enum Format: String, Sendable, CaseIterable {
        /// `TIME LEVEL LABEL: MESSAGE key=value ...`.
        case text
        /// One JSON object per line.
        case json
    }

    /// The logger's label (`eddy.node`, `eddy.s3`, ...).
    public let label: String
    /// The format.
    public let format: Format
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let sink: @Sendable (String) -> Void

    /// Lines go to stderr, one `write` each, so lines of several threads never interleave.
    static let standardError: @Sendable (String) -> Void = { line in
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// A handler for `label` at `level` writing to `sink` (stderr when nil).
    public init(
        label: String, level: Logger.Level, format: Format, sink: (@Sendable (String) -> Void)? = nil
    ) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.sink = sink ?? Self.standardError
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        sink(line(level: event.level, message: "\(event.message)", metadata: all, time: Date()))
    }

    /// The line of one event (without its newline).
    public func line(level: Logger.Level, message: String, metadata: Logger.Metadata, time: Date) -> String {
        let ts = time.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        switch format {
        case .text:
            var out = "\(ts) \(level) \(label): \(message)"
            for key in metadata.keys.sorted() { out += " \(key)=\(metadata[key]!)" }
            return out
        case .json:
            var object: [String: String] = ["ts": ts, "level": "\(level)", "logger": label, "message": message]
            for (key, value) in metadata {
                object[object[key] == nil ? key : "meta.\(key)"] = "\(value)"
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return String(decoding: (try? encoder.encode(object)) ?? Data(), as: UTF8.self)
        }
    }

    /// Sets up swift-log once for the process: every logger at `level`, or its subsystem's level in `levels`.
    public static func bootstrap(level: Logger.Level, levels: LogLevels, format: Format) {
        LoggingSystem.bootstrap { label in
            EddyLogHandler(label: label, level: levels.level(for: label, fallback: level), format: format)
        }
    }
}
