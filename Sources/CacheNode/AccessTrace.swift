import CacheCore
import Foundation
import StreamModel
import Synchronization

/// AccessTrace appends the owner's block requests to a file in Eddy's block-trace format with reader columns
/// (`time,segment,block,size,reader,kind`), which `eddy sim --format block` replays: a user tunes the eviction
/// policy on a trace of their own workload. `time` is microseconds since the trace started; `segment` is a
/// number the node gives each segment in order of first request; `size` is the block's bytes; `reader` is the
/// connection's number on this node; `kind` is `tail` (a waiting read or a read of the growing last block) or
/// `catchup`. Lines are buffered and written in 64 KiB pieces, and the rest at close.
final class AccessTrace: Sendable {
    private struct State {
        var buffer = ""
    }

    private let handle: FileHandle
    private let start = ContinuousClock.now
    private let state = Mutex(State())

    /// Creates (or truncates) the trace file and writes its header.
    /// - Throws: ``EddyError/Code/ioError`` naming the file when it cannot be created.
    init(path: String) throws(EddyError) {
        guard
            FileManager.default.createFile(atPath: path, contents: Data("time,segment,block,size,reader,kind\n".utf8)),
            let handle = FileHandle(forWritingAtPath: path)
        else {
            throw EddyError(.ioError, "cannot create the access trace \(path)")
        }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    /// Records one block request of the segment numbered `ordinal` (``SegmentOrdinals``).
    func record(_ ordinal: UInt32, block: UInt64, size: Int, reader: Int, tail: Bool) {
        let micros = Int((ContinuousClock.now - start).inSeconds * 1e6)
        let full = state.withLock { s -> String? in
            s.buffer += "\(micros),\(ordinal),\(block),\(size),\(reader),\(tail ? "tail" : "catchup")\n"
            guard s.buffer.utf8.count >= 64 << 10 else { return nil }
            defer { s.buffer = "" }
            return s.buffer
        }
        if let full { handle.write(Data(full.utf8)) }
    }

    /// Writes what is buffered and closes the file.
    func close() {
        let rest = state.withLock { s in
            defer { s.buffer = "" }
            return s.buffer
        }
        handle.write(Data(rest.utf8))
        try? handle.close()
    }
}

/// SegmentOrdinals numbers segments in order of first request, so a segment fits a ``BlockKey``: the access trace
/// and the what-if number them alike, and the what-if's figures match `eddy sim` on the trace.
final class SegmentOrdinals: Sendable {
    private let map = Mutex<[SegmentID: UInt32]>([:])

    /// The segment's number (given now if it has none).
    func ordinal(of segment: SegmentID) -> UInt32 {
        map.withLock { m in
            if let o = m[segment] { return o }
            let o = UInt32(m.count) & BlockKey.maxSegment
            m[segment] = o
            return o
        }
    }
}
