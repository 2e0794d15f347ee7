import CIOUring
import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// SegmentFile is one open segment data file, `DATA/segments/<scope>/<stream>/<number:08>.seg`.
///
/// Readers take a reference under the store's lock and read outside it; the descriptor closes when the
/// last reference goes, so a stream deleted during a read never hands a reused descriptor to anyone.
final class SegmentFile: Sendable {
    let fd: Int32
    let path: String

    init(path: String, truncate: Bool) throws(EddyError) {
        self.path = path
        fd = try FileSystem.open(path, create: true)
        if truncate && ftruncate(fd, 0) != 0 {
            let error = FileSystem.ioError("cannot truncate", path)
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    static func directory(data: String, stream: StreamName) -> String {
        "\(data)/segments/\(stream.scope)/\(stream.stream)"
    }

    static func path(data: String, segment: SegmentID) -> String {
        directory(data: data, stream: segment.stream) + "/" + Decimal.padded(UInt64(segment.number), width: 8) + ".seg"
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws(EddyError) {
        try bytes.withBytes { (b) throws(EddyError) in try FileSystem.pwrite(fd, path: path, b, at: offset) }
    }

    /// Starts writeback of `range` without waiting for it, so the checkpoint's fdatasync of this file has
    /// little left to do (it would otherwise stall the journal thread for tens of milliseconds).
    func startWriteback(_ range: Range<UInt64>) {
        _ = eddy_start_writeback(fd, off_t(range.lowerBound), off_t(range.count))
    }

    func sync() throws(EddyError) {
        guard fdatasync(fd) == 0 else { throw FileSystem.ioError("cannot fdatasync", path) }
    }

    func truncate(to length: UInt64) throws(EddyError) {
        guard ftruncate(fd, off_t(length)) == 0 else { throw FileSystem.ioError("cannot truncate", path) }
    }

    /// Frees the disk blocks below `offset` (whole 4 KiB pages) after a truncation; offsets stay absolute.
    func punchHole(below offset: UInt64) {
        let length = offset & ~UInt64(4095)
        guard length > 0 else { return }
        // A filesystem without hole punching keeps the bytes; reads below the start are refused anyway.
        _ = eddy_punch_hole(fd, off_t(length))
    }

    func size() throws(EddyError) -> UInt64 { try FileSystem.size(of: fd, path: path) }

    /// Reads the bytes `[from, from + count)`, or fewer when the file ends first.
    func read(from offset: UInt64, count: Int) throws(EddyError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withMutableBytes { (b) throws(EddyError) -> Int in
            try FileSystem.pread(fd, path: path, into: b, at: offset)
        }
        if n < count { bytes.removeLast(count - n) }
        return bytes
    }

    /// Reads whole, CRC-checked frames starting at the event boundary `boundary` until they cover `end`,
    /// never past `limit` (the segment's durable length).
    /// - Returns: the bytes from `boundary` to the end of the last frame that overlaps `[boundary, end)`.
    /// - Throws: ``EddyError/Code/corruptData`` naming the file and the offset of the bad frame.
    func readFrames(from boundary: UInt64, covering end: UInt64, limit: UInt64) throws(EddyError) -> [UInt8] {
        var bytes = try read(from: boundary, count: Int(end - boundary))
        guard bytes.count == Int(end - boundary) else {
            throw corrupt(at: boundary + UInt64(bytes.count), "file is shorter than the segment's length \(limit)")
        }
        var at = 0
        while UInt64(at) + boundary < end {
            let result = bytes.withUnsafeBytes { EventFrame.check($0, at: at) }
            switch result {
            case .frame(let size):
                at += size
            case .incomplete(let size):
                let frameEnd = boundary + UInt64(at) + UInt64(size > 0 ? size : 4)
                guard frameEnd <= limit else {
                    throw corrupt(at: boundary + UInt64(at), "frame runs past the segment's length \(limit)")
                }
                let wanted = Int(frameEnd - boundary) - bytes.count
                let more = try read(from: boundary + UInt64(bytes.count), count: wanted)
                guard more.count == wanted else {
                    throw corrupt(at: boundary + UInt64(at), "file is shorter than the segment's length \(limit)")
                }
                bytes.append(contentsOf: more)
            case .corrupt(let why):
                throw corrupt(at: boundary + UInt64(at), why)
            }
        }
        return bytes
    }

    private func corrupt(at offset: UInt64, _ why: String) -> EddyError {
        EddyError(.corruptData, "corrupt segment file \(path) at offset \(offset): \(why)")
    }
}
