import CZlib
import CZstd
import CacheCore
import Foundation
import StreamModel

/// A trace loaded into memory: one entry per request.
public struct Trace: Sendable {
    /// Object IDs in request order.
    public var ids: [UInt64]
    /// Object sizes in bytes (1 where the format has none).
    public var sizes: [UInt32]
    /// Where the trace came from, for reports.
    public var name: String

    /// Creates a trace.
    public init(ids: [UInt64], sizes: [UInt32], name: String) {
        precondition(ids.count == sizes.count)
        self.ids = ids
        self.sizes = sizes
        self.name = name
    }

    /// Number of requests.
    public var count: Int { ids.count }

    /// For each request, the index of the next request for the same object, or `Int64.max`.
    public func nextAccessTimes() -> [Int64] {
        var next = [Int64](repeating: .max, count: ids.count)
        var seen: [UInt64: Int64] = [:]
        seen.reserveCapacity(ids.count / 4)
        for i in stride(from: ids.count - 1, through: 0, by: -1) {
            if let later = seen.updateValue(Int64(i), forKey: ids[i]) { next[i] = later }
        }
        return next
    }

    /// The working set: distinct objects, and the sum of their sizes (each object's first size).
    public func workingSet() -> (objects: Int, bytes: Int64) {
        var seen = Set<UInt64>()
        seen.reserveCapacity(ids.count / 4)
        var bytes: Int64 = 0
        for i in 0..<ids.count where seen.insert(ids[i]).inserted { bytes += Int64(sizes[i]) }
        return (seen.count, bytes)
    }
}

/// The trace formats `eddy sim` reads (one visible registry, like the policies').
public enum TraceFormat: String, Sendable, CaseIterable {
    /// libCacheSim's binary: little-endian 24-byte records `<u32 time, u64 id, u32 size, i64 next access>`.
    case oracleGeneral
    /// One integer ID per line; other lines (blank, `*` markers) are skipped; CR is ignored.
    case txt
    /// CSV with a header; `--csv-columns time=N,id=N,size=N` picks 1-based columns (default id=1).
    case csv
    /// Eddy's block trace: CSV with header `time,segment,block,size`; IDs are ``BlockKey``s. A node's
    /// `--trace-out` adds two columns, `reader` (a number per client connection) and `kind` (`tail` or
    /// `catchup`), under the header `time,segment,block,size,reader,kind`; both forms replay.
    case block
}

/// Which CSV columns hold what (1-based).
public struct CSVColumns: Sendable, Hashable {
    public var time: Int?
    public var id: Int
    public var size: Int?

    /// Creates a column map.
    public init(time: Int? = nil, id: Int = 1, size: Int? = nil) {
        self.time = time
        self.id = id
        self.size = size
    }

    /// Parses `time=N,id=N,size=N` (any subset; id is required).
    public init(parsing text: String) throws(EddyError) {
        var columns = CSVColumns()
        var sawID = false
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=")
            guard kv.count == 2, let n = Int(kv[1]), n >= 1 else {
                throw EddyError(.invalidArgument, "bad --csv-columns entry '\(part)': expected NAME=COLUMN (1-based)")
            }
            switch kv[0] {
            case "time": columns.time = n
            case "id":
                columns.id = n
                sawID = true
            case "size": columns.size = n
            default:
                throw EddyError(.invalidArgument, "bad --csv-columns name '\(kv[0])': use time, id or size")
            }
        }
        guard sawID else { throw EddyError(.invalidArgument, "--csv-columns needs id=N") }
        self = columns
    }
}

/// TraceReader loads traces: plain, gzip (`.gz`) or zstd (`.zst`) files in any ``TraceFormat``.
public enum TraceReader {
    /// Loads the whole trace at `path`.
    /// - Throws: ``EddyError/Code/ioError`` for a missing or unreadable file, ``EddyError/Code/invalidArgument``
    ///   naming the line or record for content that does not parse.
    public static func load(path: String, format: TraceFormat, columns: CSVColumns = CSVColumns()) throws(EddyError)
        -> Trace
    {
        let raw: Data
        do {
            raw = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.ioError, "cannot read trace \(path): \(error.localizedDescription)")
        }
        let bytes: [UInt8]
        if path.hasSuffix(".gz") {
            bytes = try Decompress.gzip(Array(raw), path: path)
        } else if path.hasSuffix(".zst") {
            bytes = try Decompress.zstd(Array(raw), path: path)
        } else {
            bytes = Array(raw)
        }
        let name = URL(fileURLWithPath: path).lastPathComponent
        switch format {
        case .oracleGeneral: return try parseOracleGeneral(bytes, name: name)
        case .txt: return try parseText(bytes, name: name)
        case .csv: return try parseCSV(bytes, name: name, columns: columns)
        case .block: return try parseBlock(bytes, name: name)
        }
    }

    static func parseOracleGeneral(_ bytes: [UInt8], name: String) throws(EddyError) -> Trace {
        guard bytes.count % 24 == 0 else {
            throw EddyError(
                .invalidArgument, "\(name): \(bytes.count) bytes is not a whole number of 24-byte oracleGeneral records"
            )
        }
        let n = bytes.count / 24
        var ids = [UInt64](repeating: 0, count: n)
        var sizes = [UInt32](repeating: 0, count: n)
        bytes.withUnsafeBytes { b in
            for i in 0..<n {
                ids[i] = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 4, as: UInt64.self))
                sizes[i] = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 12, as: UInt32.self))
            }
        }
        return Trace(ids: ids, sizes: sizes, name: name)
    }

    /// Calls `body` with each line (without CR/LF) and its 1-based number.
    static func forEachLine(_ bytes: [UInt8], _ body: (ArraySlice<UInt8>, Int) throws(EddyError) -> Void)
        throws(EddyError)
    {
        var start = 0
        var number = 1
        var i = 0
        while i <= bytes.count {
            if i == bytes.count || bytes[i] == UInt8(ascii: "\n") {
                var end = i
                if end > start && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                if end > start || i < bytes.count { try body(bytes[start..<end], number) }
                number += 1
                start = i + 1
            }
            i += 1
        }
    }

    static func parseUInt(_ field: ArraySlice<UInt8>) -> UInt64? {
        guard !field.isEmpty else { return nil }
        var v: UInt64 = 0
        for c in field {
            guard c >= 48 && c <= 57 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(c - 48))
            if o1 || o2 { return nil }
            v = s
        }
        return v
    }

    static func parseText(_ bytes: [UInt8], name: String) throws(EddyError) -> Trace {
        var ids: [UInt64] = []
        ids.reserveCapacity(bytes.count / 6)
        try forEachLine(bytes) { (line, _) throws(EddyError) in
            if let v = parseUInt(line) { ids.append(v) }
        }
        return Trace(ids: ids, sizes: [UInt32](repeating: 1, count: ids.count), name: name)
    }

    static func fields(_ line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        line.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map {
            var f = $0
            while f.first == UInt8(ascii: " ") { f = f.dropFirst() }
            while f.last == UInt8(ascii: " ") { f = f.dropLast() }
            return f
        }
    }

    static func parseCSV(_ bytes: [UInt8], name: String, columns: CSVColumns) throws(EddyError) -> Trace {
        var ids: [UInt64] = []
        var sizes: [UInt32] = []
        try forEachLine(bytes) { (line, number) throws(EddyError) in
            guard number > 1, !line.isEmpty else { return }
            let f = fields(line)
            guard columns.id <= f.count, let id = parseUInt(f[columns.id - 1]) else {
                throw EddyError(.invalidArgument, "\(name) line \(number): no integer ID in column \(columns.id)")
            }
            var size: UInt32 = 1
            if let c = columns.size {
                guard c <= f.count, let s = parseUInt(f[c - 1]), s <= UInt64(UInt32.max) else {
                    throw EddyError(.invalidArgument, "\(name) line \(number): no size in column \(c)")
                }
                size = UInt32(s)
            }
            ids.append(id)
            sizes.append(size)
        }
        return Trace(ids: ids, sizes: sizes, name: name)
    }

    static func parseBlock(_ bytes: [UInt8], name: String) throws(EddyError) -> Trace {
        var ids: [UInt64] = []
        var sizes: [UInt32] = []
        try forEachLine(bytes) { (line, number) throws(EddyError) in
            if number == 1 {
                let header = String(decoding: line, as: UTF8.self)
                guard header == "time,segment,block,size" || header == "time,segment,block,size,reader,kind" else {
                    throw EddyError(
                        .invalidArgument,
                        "\(name): a block trace starts with the header time,segment,block,size[,reader,kind]")
                }
                return
            }
            guard !line.isEmpty else { return }
            let f = fields(line)
            guard f.count == 4 || f.count == 6, parseUInt(f[0]) != nil, let segment = parseUInt(f[1]),
                let block = parseUInt(f[2]),
                let size = parseUInt(f[3]), segment <= UInt64(BlockKey.maxSegment), block <= BlockKey.maxBlock,
                size <= UInt64(UInt32.max)
            else {
                throw EddyError(
                    .invalidArgument, "\(name) line \(number): expected time,segment,block,size with integers in range")
            }
            ids.append(BlockKey(segment: UInt32(segment), block: block).rawValue)
            sizes.append(UInt32(size))
        }
        return Trace(ids: ids, sizes: sizes, name: name)
    }
}

/// Whole-buffer decompression for trace files.
enum Decompress {
    static func gzip(_ input: [UInt8], path: String) throws(EddyError) -> [UInt8] {
        var stream = z_stream()
        guard eddy_inflate_init_gzip(&stream) == Z_OK else { throw EddyError(.ioError, "zlib init failed for \(path)") }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var input = input
        let status: Int32 = input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            var rc: Int32 = Z_OK
            while rc == Z_OK {
                rc = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                output.append(contentsOf: chunk[0..<(chunk.count - Int(stream.avail_out))])
                if rc == Z_STREAM_END && stream.avail_in > 0 {
                    // Concatenated gzip members: start the next one.
                    inflateReset(&stream)
                    rc = Z_OK
                }
            }
            return rc
        }
        guard status == Z_STREAM_END else {
            throw EddyError(.invalidArgument, "\(path) is not valid gzip (zlib status \(status))")
        }
        return output
    }

    static func zstd(_ input: [UInt8], path: String) throws(EddyError) -> [UInt8] {
        guard let stream = ZSTD_createDStream() else { throw EddyError(.ioError, "zstd init failed for \(path)") }
        defer { ZSTD_freeDStream(stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: Int(ZSTD_DStreamOutSize()))
        let error: String? = input.withUnsafeBytes { inBuf in
            var inb = ZSTD_inBuffer(src: inBuf.baseAddress, size: inBuf.count, pos: 0)
            var last: Int = 0
            while inb.pos < inb.size {
                let produced: Int = chunk.withUnsafeMutableBytes { out in
                    var outb = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                    last = ZSTD_decompressStream(stream, &outb, &inb)
                    return outb.pos
                }
                if ZSTD_isError(last) != 0 { return String(cString: ZSTD_getErrorName(last)) }
                output.append(contentsOf: chunk[0..<produced])
            }
            return last == 0 ? nil : "truncated zstd stream"
        }
        if let error { throw EddyError(.invalidArgument, "\(path) is not valid zstd: \(error)") }
        return output
    }
}
