import ArgumentParser
import CacheNode
import EddyClient
import Foundation
import ObjectStorage
import StreamModel
import Synchronization
import WriteBack

/// The streams a `backup` or `restore` names: SCOPE/STREAM, or every one with --all.
struct StreamSelection: ParsableArguments {
    @Argument(help: "SCOPE/STREAM (or --all).") var stream: String?
    @Flag(name: .long, help: "Every stream (but Eddy's own `_eddy` scope).") var all = false

    func validate() throws {
        guard (stream != nil) != all else { throw ValidationError("name one SCOPE/STREAM, or give --all") }
    }

    /// The stream named, or every stream `everything` lists with --all.
    func names(all everything: () async throws -> [StreamName]) async throws -> [StreamName] {
        all ? try await everything() : [try parseStream(stream!)]
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy streams to object storage, incrementally, keeping segments and offsets for a restore.",
        discussion: """
            Each segment goes to PREFIX/scope/stream/SEGMENT/START.blk block objects (one per aligned MiB) and a
            PREFIX/scope/stream/SEGMENT.manifest; PREFIX/scope/stream/stream.json names the segment count. A second
            backup to the same place copies only what the manifests do not hold yet. The stream is read through
            --server, so what write-back moved out of the store is backed up too.
            """)

    @OptionGroup var selection: StreamSelection
    @Option(name: .long, help: "Where: file://DIR or s3://BUCKET/PREFIX.") var to: String
    @Option(name: .long, help: "Segments copied at once.") var concurrency: Int = 4
    @OptionGroup var s3: S3Options
    @OptionGroup var server: ServerOption

    func run() async throws {
        guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency must be 1...64") }
        let location = try s3.location(to)
        try await withClient(server) { client in
            let store = try location.makeStore(environment: ProcessInfo.processInfo.environment)
            let names = try await selection.names {
                try await client.listStreams().map(\.name).filter { $0.scope != StreamName.internalScope }
            }
            for name in names {
                let progress = ProgressLine(what: "backing up \(name)")
                let report = try await StreamBackup.backup(
                    name, from: client, to: store, prefix: location.prefix, concurrency: concurrency,
                    progress: progress.update)
                print(
                    "backed up \(name) to \(location): \(report.segments) segments, \(report.bytes) new bytes in "
                        + "\(report.objects) objects (\(report.objectsPresent) already there)")
            }
            if names.isEmpty { print("no streams to back up") }
        }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create streams again from a backup (or a write-back location), every event at its old pointer.",
        discussion: """
            The stream must not exist (delete it, or give --as NEW/NAME). Each segment's events are appended in
            order from offset 0, so event pointers from before the backup work after the restore; sealed segments
            are sealed. A segment whose backup starts above offset 0 (the store had dropped its front first) gets
            filler events below that offset, which are then truncated.
            """)

    @OptionGroup var selection: StreamSelection
    @Option(name: .long, help: "Where the backup is: file://DIR or s3://BUCKET/PREFIX.") var from: String
    @Option(name: .customLong("as"), help: "Restore a single stream under this SCOPE/STREAM.") var target: String?
    @Option(name: .long, help: "Segments restored at once.") var concurrency: Int = 4
    @OptionGroup var s3: S3Options
    @OptionGroup var server: ServerOption

    func run() async throws {
        guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency must be 1...64") }
        guard target == nil || !selection.all else { throw ValidationError("--as restores one stream, not --all") }
        let location = try s3.location(from)
        try await withClient(server) { client in
            let store = try location.makeStore(environment: ProcessInfo.processInfo.environment)
            let names = try await selection.names {
                let found = try await StreamBackup.backedUpStreams(in: store, prefix: location.prefix)
                guard !found.isEmpty else { throw EddyError(.streamNotFound, "no stream backups at \(location)") }
                return found
            }
            for name in names {
                let destination = try target.map(parseStream) ?? name
                let progress = ProgressLine(what: "restoring \(name)")
                let report = try await StreamBackup.restore(
                    name, from: store, prefix: location.prefix, as: destination, into: client,
                    concurrency: concurrency, progress: progress.update)
                for warning in report.warnings { FileHandle.standardError.write(Data("eddy: \(warning)\n".utf8)) }
                print(
                    "restored \(name)\(destination == name ? "" : " as \(destination)") from \(location): "
                        + "\(report.segments) segments, \(report.events) events, \(report.bytes) bytes")
            }
        }
    }
}

/// Progress of a long copy on stderr (`... WHAT: N UNIT`), at most once a second.
final class ProgressLine: Sendable {
    let what: String
    let unit: String
    let last = Mutex<ContinuousClock.Instant>(.now)

    init(what: String, unit: String = "bytes") {
        self.what = what
        self.unit = unit
    }

    func update(_ count: UInt64) {
        let due = last.withLock { last -> Bool in
            guard ContinuousClock.now - last >= .seconds(1) else { return false }
            last = .now
            return true
        }
        if due { FileHandle.standardError.write(Data("... \(what): \(count) \(unit)\n".utf8)) }
    }
}
