import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// Journal files: `DATA/journal/<sequence:020>.log`, each a 24-byte header (`EDDYJRNL`, u32 version,
/// u32 reserved, u64 sequence) followed by records (``JournalRecord``). A checkpoint names the first sequence
/// still needed; older files are deleted.
enum JournalFiles {
    static let magic: [UInt8] = Array("EDDYJRNL".utf8)
    static let version: UInt32 = 1
    static let headerSize = 24

    static func path(directory: String, sequence: UInt64) -> String {
        "\(directory)/\(Decimal.padded(sequence, width: 20)).log"
    }

    /// The sequences of the journal files present, in order.
    static func sequences(directory: String) -> [UInt64] {
        FileSystem.list(directory).compactMap { name in
            guard name.hasSuffix(".log") else { return nil }
            return UInt64(name.dropLast(4))
        }.sorted()
    }

    static func header(sequence: UInt64) -> [UInt8] {
        var w = ByteWriter()
        w.bytes = magic
        w.u32(version)
        w.u32(0)
        w.u64(sequence)
        return w.bytes
    }
}

/// JournalWriter appends batches of records to the current journal file and makes each batch durable with
/// one write and one sync (group commit). Only the journal thread uses it.
final class JournalWriter {
    let directory: String
    let ring: IOUringRing?
    private(set) var sequence: UInt64
    private(set) var position: UInt64
    private var fd: Int32
    private var writer: DurableWriter

    /// Creates journal file `sequence` anew and makes its header and directory entry durable.
    init(directory: String, sequence: UInt64, ring: IOUringRing?) throws(EddyError) {
        self.directory = directory
        self.ring = ring
        self.sequence = sequence
        (fd, writer) = try Self.create(directory: directory, sequence: sequence, ring: ring)
        position = UInt64(JournalFiles.headerSize)
    }

    deinit { close(fd) }

    private static func create(directory: String, sequence: UInt64, ring: IOUringRing?) throws(EddyError)
        -> (Int32, DurableWriter)
    {
        let path = JournalFiles.path(directory: directory, sequence: sequence)
        let fd = try FileSystem.open(path, create: true)
        guard ftruncate(fd, 0) == 0 else {
            close(fd)
            throw FileSystem.ioError("cannot truncate", path)
        }
        let writer: DurableWriter =
            ring.map { IOUringWriter(fd: fd, path: path, ring: $0) } ?? PosixWriter(fd: fd, path: path)
        do throws(EddyError) {
            try JournalFiles.header(sequence: sequence).withBytes { (b) throws(EddyError) in
                try writer.writeDurably(b, at: 0)
            }
            try FileSystem.syncDirectory(directory)
        } catch {
            close(fd)
            throw error
        }
        return (fd, writer)
    }

    /// Writes a batch of encoded records and returns once they are on disk.
    func append(_ bytes: [UInt8]) throws(EddyError) {
        try bytes.withBytes { (b) throws(EddyError) in try writer.writeDurably(b, at: position) }
        position += UInt64(bytes.count)
    }

    /// Starts journal file `sequence + 1`; the previous file stays until a checkpoint covers it.
    func roll() throws(EddyError) {
        let next = sequence + 1
        let (newFD, newWriter) = try Self.create(directory: directory, sequence: next, ring: ring)
        close(fd)
        fd = newFD
        writer = newWriter
        sequence = next
        position = UInt64(JournalFiles.headerSize)
    }
}

/// JournalScanner reads a journal file back for recovery.
enum JournalScanner {
    struct Scan {
        var records: [(lsn: UInt64, record: JournalRecord)]
        /// Bytes of valid records (with the header); the file is cut here when its tail is torn.
        var validLength: Int
        /// Bytes after `validLength`, a torn tail.
        var tornBytes: Int
    }

    /// Reads every record of the file at `path`.
    ///
    /// In the last file, a record that is cut short or fails its CRC with nothing valid after it is a torn
    /// tail: a batch the crash interrupted, never acknowledged. Anything else that fails to parse is
    /// corruption, reported with the file and the offset.
    static func scan(path: String, isLast: Bool, expectedLSN: UInt64) throws(EddyError) -> Scan {
        try scan(try FileSystem.readWholeFile(path), path: path, isLast: isLast, expectedLSN: expectedLSN)
    }

    /// ``scan(path:isLast:expectedLSN:)`` of a file's bytes; `path` names it in errors.
    static func scan(_ bytes: [UInt8], path: String, isLast: Bool, expectedLSN: UInt64) throws(EddyError) -> Scan {
        try bytes.withBytes { (b) throws(EddyError) -> Scan in
            guard b.count >= JournalFiles.headerSize else {
                if isLast { return Scan(records: [], validLength: 0, tornBytes: b.count) }
                throw EddyError(.corruptData, "journal \(path) is shorter than its header (\(b.count) bytes)")
            }
            guard Array(b[0..<8]) == JournalFiles.magic else {
                throw EddyError(.corruptData, "journal \(path) does not start with EDDYJRNL: not a journal file")
            }
            var records: [(lsn: UInt64, record: JournalRecord)] = []
            var at = JournalFiles.headerSize
            var next = expectedLSN
            while at < b.count {
                let decoded = JournalRecord.decode(b, at: at)
                switch decoded {
                case .record(let record, let lsn, let size):
                    guard lsn == next else {
                        throw EddyError(
                            .corruptData, "journal \(path) at offset \(at): record LSN \(lsn), expected \(next)")
                    }
                    records.append((lsn, record))
                    next += 1
                    at += size
                case .incomplete, .corrupt:
                    var why = "cut short"
                    if case .corrupt(let text) = decoded { why = text }
                    if isLast, !hasValidRecord(b, after: at, lsnAbove: next) {
                        return Scan(records: records, validLength: at, tornBytes: b.count - at)
                    }
                    throw EddyError(
                        .corruptData,
                        "journal \(path) is corrupt at offset \(at): \(why), and valid records follow it")
                }
            }
            return Scan(records: records, validLength: at, tornBytes: 0)
        }
    }

    /// Whether any valid record with an LSN of at least `lsnAbove` starts after `offset`.
    static func hasValidRecord(_ b: UnsafeRawBufferPointer, after offset: Int, lsnAbove: UInt64) -> Bool {
        var p = offset + 1
        while p + JournalRecord.prefixSize + 9 <= b.count {
            let lsn = UInt64(bigEndian: b.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self))
            if lsn >= lsnAbove, lsn < lsnAbove + 1_000_000, case .record = JournalRecord.decode(b, at: p) {
                return true
            }
            p += 1
        }
        return false
    }
}
