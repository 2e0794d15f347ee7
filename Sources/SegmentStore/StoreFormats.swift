import StreamModel

/// The store's on-disk formats checked from their bytes, as recovery reads them: for tools that verify files and
/// for the fuzzers (`scripts/fuzz.sh`). Every failure is ``EddyError/Code/corruptData`` naming the file (`path`)
/// and, in a journal, the offset.
public enum StoreFormats {
    /// Reads a journal file's records as recovery does. With `isLast`, a cut-short or failed record with nothing
    /// valid after it is a torn tail (returned as `tornBytes`), not an error.
    /// - Returns: the number of records and the torn tail's length.
    public static func scanJournal(
        _ bytes: [UInt8], path: String, isLast: Bool, firstLSN: UInt64 = 1
    ) throws(EddyError) -> (records: Int, tornBytes: Int) {
        let scan = try JournalScanner.scan(bytes, path: path, isLast: isLast, expectedLSN: firstLSN)
        return (scan.records.count, scan.tornBytes)
    }

    /// Decodes a checkpoint file.
    /// - Returns: the number of segments it describes.
    public static func decodeCheckpoint(_ bytes: [UInt8], path: String) throws(EddyError) -> Int {
        try Checkpoint.decode(bytes, path: path).catalog.streams.values.reduce(0) { $0 + $1.count }
    }

    /// A journal file holding one record whose body is `body` (its LSN, type and fields), with a valid header,
    /// length and CRC: lets a fuzzer reach the record parser behind the checksum.
    public static func journalFile(recordBody body: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes = JournalFiles.header(sequence: 1)
        w.u32(UInt32(body.count))
        w.u32(body.withUnsafeBytes { CRC32C.checksum($0) })
        w.bytes += body
        return w.bytes
    }

    /// A checkpoint file with `content` (everything after the magic, before the CRC) and a valid CRC.
    public static func checkpointFile(content: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.bytes = Checkpoint.magic + content
        w.u32(w.bytes.withUnsafeBytes { CRC32C.checksum($0) })
        return w.bytes
    }
}
