import Logging
import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// Recovery rebuilds the store's state at open: the last checkpoint, then every journal record after it.
enum Recovery {
    struct Recovered {
        var catalog: Catalog
        var files: SegmentFileSet
        var journal: JournalWriter
        var nextLSN: UInt64
    }

    static func checkpointPath(_ data: String) -> String { data + "/checkpoint" }

    static func run(configuration: StoreConfiguration, ring: IOUringRing?) throws(EddyError) -> Recovered {
        let data = configuration.dataDirectory
        let logger = configuration.logger
        var checkpoint = Checkpoint(journalSequence: 1, nextLSN: 1, catalog: Catalog())
        let cpPath = checkpointPath(data)
        if FileSystem.exists(cpPath) {
            checkpoint = try Checkpoint.decode(try FileSystem.readWholeFile(cpPath), path: cpPath)
        }

        // Journal files from the checkpoint's sequence on, consecutive, read before the segment files are
        // checked: a stream the journal deletes may have lost its files already (deleted, or cut short by a
        // stream of the same name created again) and is not held to the checkpoint's lengths.
        let directory = data + "/journal"
        let all = JournalFiles.sequences(directory: directory)
        for stale in all where stale < checkpoint.journalSequence {
            FileSystem.remove(JournalFiles.path(directory: directory, sequence: stale))
        }
        let live = all.filter { $0 >= checkpoint.journalSequence }
        if let first = live.first, first != checkpoint.journalSequence {
            throw EddyError(
                .corruptData,
                "journal file \(JournalFiles.path(directory: directory, sequence: checkpoint.journalSequence)) is missing"
            )
        }
        for (a, b) in zip(live, live.dropFirst()) where b != a + 1 {
            throw EddyError(
                .corruptData, "journal file \(JournalFiles.path(directory: directory, sequence: a + 1)) is missing")
        }
        var scans: [(path: String, records: [(lsn: UInt64, record: JournalRecord)])] = []
        var expected = checkpoint.nextLSN
        var deleted: Set<StreamName> = []
        for (i, sequence) in live.enumerated() {
            let path = JournalFiles.path(directory: directory, sequence: sequence)
            let scan = try JournalScanner.scan(path: path, isLast: i == live.count - 1, expectedLSN: expected)
            for (recordLSN, record) in scan.records {
                if case .deleteStream(let name) = record { deleted.insert(name) }
                expected = recordLSN + 1
            }
            if scan.tornBytes > 0 {
                try cutTornTail(path: path, validLength: scan.validLength, sequence: sequence)
                logger.warning(
                    "cut a torn journal tail",
                    metadata: ["file": "\(path)", "offset": "\(scan.validLength)", "bytes": "\(scan.tornBytes)"])
            }
            scans.append((path, scan.records))
        }

        // Segment files: trust exactly the checkpointed length; later bytes come back from the journal.
        var files = SegmentFileSet(data: data)
        for (name, segments) in checkpoint.catalog.streams {
            try FileSystem.makeDirectories(SegmentFile.directory(data: data, stream: name))
            for (i, state) in segments.enumerated() {
                let id = SegmentID(stream: name, number: UInt32(i))
                let path = SegmentFile.path(data: data, segment: id)
                if deleted.contains(name) {
                    // Replay writes what the journal appends to it before the deletion, then deletes it.
                    files.files[id] = try SegmentFile(path: path, truncate: false)
                    continue
                }
                if !FileSystem.exists(path) && state.length > 0 {
                    throw EddyError(
                        .corruptData, "segment file \(path) is missing; the checkpoint says \(state.length) bytes")
                }
                let file = try SegmentFile(path: path, truncate: false)
                let size = try file.size()
                guard size >= state.length else {
                    throw EddyError(
                        .corruptData,
                        "segment file \(path) is \(size) bytes, but the checkpoint says \(state.length): bytes are lost"
                    )
                }
                if size > state.length { try file.truncate(to: state.length) }
                files.files[id] = file
            }
        }

        var catalog = checkpoint.catalog
        var lsn = checkpoint.nextLSN
        var replayed = 0
        for (path, records) in scans {
            for (recordLSN, record) in records {
                do throws(EddyError) {
                    try catalog.apply(record, lsn: recordLSN)
                } catch {
                    throw EddyError(.corruptData, "journal \(path), record LSN \(recordLSN): \(error.message)")
                }
                try files.apply(record)
                lsn = recordLSN + 1
                replayed += 1
            }
        }
        if replayed > 0 {
            logger.info("replayed journal", metadata: ["records": "\(replayed)", "files": "\(live.count)"])
        }
        let journal = try JournalWriter(
            directory: directory, sequence: (live.last ?? checkpoint.journalSequence - 1) + 1, ring: ring)
        return Recovered(catalog: catalog, files: files, journal: journal, nextLSN: lsn)
    }

    /// Cuts a torn tail off the last journal file durably, so it cannot look like corruption once a newer
    /// journal file follows it. A file torn inside its header gets a fresh header.
    private static func cutTornTail(path: String, validLength: Int, sequence: UInt64) throws(EddyError) {
        let fd = try FileSystem.open(path, create: false)
        defer { close(fd) }
        let keep = validLength >= JournalFiles.headerSize ? validLength : 0
        guard ftruncate(fd, off_t(keep)) == 0 else { throw FileSystem.ioError("cannot truncate", path) }
        if keep == 0 {
            try JournalFiles.header(sequence: sequence).withBytes { (b) throws(EddyError) in
                try FileSystem.pwrite(fd, path: path, b, at: 0)
            }
        }
        guard fsync(fd) == 0 else { throw FileSystem.ioError("cannot fsync", path) }
    }
}
