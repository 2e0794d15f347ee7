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
        var ordinals: [SegmentID: Int] = [:]
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

    /// Records one block request.
    func record(_ segment: SegmentID, block: UInt64, size: Int, reader: Int, tail: Bool) {
        let micros = Int((ContinuousClock.now - start).inSeconds * 1e6)
        let full = state.withLock { s -> String? in
            let ordinal: Int
            if let o = s.ordinals[segment] {
                ordinal = o
            } else {
                ordinal = s.ordinals.count
                s.ordinals[segment] = ordinal
            }
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
