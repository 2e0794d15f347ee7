import StreamModel

/// Checkpoint is the durable snapshot that bounds recovery: the catalog as of the start of journal file
/// `journalSequence`, whose first record has LSN `nextLSN`. Segment files are fsynced before it is written,
/// so recovery trusts their first `length` bytes and replays only later journal files.
///
/// Layout: `EDDYCKPT`, u32 version, u64 journalSequence, u64 nextLSN, the catalog, then a u32 CRC32C of all
/// bytes before it. Version 2 adds each segment's incarnation after its sealed flag; version 1 files (written
/// before stores recorded incarnations) still load, their streams' incarnations 0. Written atomically (temporary file, fsync, rename, fsync of the directory).
struct Checkpoint: Hashable {
    static let magic: [UInt8] = Array("EDDYCKPT".utf8)
    static let version: UInt32 = 2

    var journalSequence: UInt64
    var nextLSN: UInt64
    var catalog: Catalog

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.bytes = Self.magic
        w.u32(Self.version)
        w.u64(journalSequence)
        w.u64(nextLSN)
        let names = catalog.streams.keys.sorted()
        w.u32(UInt32(names.count))
        for name in names {
            let segments = catalog.streams[name]!
            w.stream(name)
            w.u32(UInt32(segments.count))
            for s in segments {
                w.u64(s.start)
                w.u64(s.length)
                w.bool(s.sealed)
                w.u64(s.incarnation)
                w.u32(UInt32(s.boundaries.count))
                for b in s.boundaries { w.u64(b) }
                w.u32(UInt32(s.writers.count))
                for (id, window) in s.writers.sorted(by: { $0.key < $1.key }) {
                    w.string(id)
                    w.i64(window.lastEventNumber)
                    w.u32(UInt32(window.batches.count))
                    for batch in window.batches {
                        w.i64(batch.firstEventNumber)
                        w.u32(batch.count)
                        w.u64(batch.offset)
                    }
                }
            }
        }
        let crc = CRC32C.checksum(w.bytes)
        w.u32(crc)
        return w.bytes
    }

    /// Parses a checkpoint file's bytes.
    /// - Throws: ``EddyError/Code/corruptData`` naming `path` when the file fails its CRC or does not parse.
    static func decode(_ bytes: [UInt8], path: String) throws(EddyError) -> Checkpoint {
        func corrupt(_ why: String) -> EddyError {
            EddyError(.corruptData, "checkpoint \(path) is corrupt: \(why)")
        }
        guard bytes.count >= 32, Array(bytes[0..<8]) == magic else { throw corrupt("bad header") }
        let stored = bytes.withUnsafeBytes {
            UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))
        }
        guard CRC32C.checksum(bytes[0..<(bytes.count - 4)]) == stored else { throw corrupt("CRC32C mismatch") }
        return try bytes.withBytes { (b) throws(EddyError) -> Checkpoint in
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: b[8..<(b.count - 4)]))
            do {
                let fileVersion = try r.u32()
                guard fileVersion == 1 || fileVersion == version else { throw corrupt("unknown version") }
                let sequence = try r.u64()
                let lsn = try r.u64()
                var catalog = Catalog()
                for _ in 0..<(try r.u32()) {
                    let name = try r.stream()
                    var segments: [SegmentState] = []
                    for _ in 0..<(try r.u32()) {
                        var s = SegmentState()
                        s.start = try r.u64()
                        s.length = try r.u64()
                        s.sealed = try r.bool()
                        if fileVersion >= 2 { s.incarnation = try r.u64() }
                        s.boundaries = []
                        for _ in 0..<(try r.u32()) { s.boundaries.append(try r.u64()) }
                        guard !s.boundaries.isEmpty else { throw corrupt("segment of \(name) without boundaries") }
                        for _ in 0..<(try r.u32()) {
                            let id = try r.string()
                            var window = WriterWindow(lastEventNumber: try r.i64(), batches: [])
                            for _ in 0..<(try r.u32()) {
                                window.batches.append(
                                    .init(firstEventNumber: try r.i64(), count: try r.u32(), offset: try r.u64()))
                            }
                            s.writers[id] = window
                        }
                        segments.append(s)
                    }
                    catalog.streams[name] = segments
                }
                guard r.remaining == 0 else { throw corrupt("\(r.remaining) trailing bytes") }
                return Checkpoint(journalSequence: sequence, nextLSN: lsn, catalog: catalog)
            } catch let e as EddyError {
                throw e
            } catch {
                throw corrupt("cut short")
            }
        }
    }
}
