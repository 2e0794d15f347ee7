import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// LineReader reads standard input in chunks and hands out the complete lines of each chunk together, so
/// a piped file arrives in large batches and a person typing gets each line sent at once.
enum LineReader {
    /// The lines of fd `fd`, grouped by read, at most `maxBatch` lines a group.
    static func batches(fd: Int32 = 0, maxBatch: Int) -> AsyncStream<[[UInt8]]> {
        let (stream, continuation) = AsyncStream<[[UInt8]]>.makeStream(bufferingPolicy: .bufferingOldest(64))
        let thread = Thread {
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    if !pending.isEmpty { send([pending], continuation, maxBatch) }
                    break
                }
                var lines: [[UInt8]] = []
                var start = 0
                chunk.withUnsafeBytes { b in
                    for i in 0..<n where b[i] == UInt8(ascii: "\n") {
                        var line = pending + b[start..<i]
                        if line.last == UInt8(ascii: "\r") { line.removeLast() }
                        lines.append(line)
                        pending.removeAll()
                        start = i + 1
                    }
                    pending.append(contentsOf: b[start..<n])
                }
                if !lines.isEmpty { send(lines, continuation, maxBatch) }
            }
            continuation.finish()
        }
        thread.start()
        return stream
    }

    private static func send(
        _ lines: [[UInt8]], _ continuation: AsyncStream<[[UInt8]]>.Continuation, _ maxBatch: Int
    ) {
        var i = 0
        while i < lines.count {
            let group = Array(lines[i..<min(i + maxBatch, lines.count)])
            // The buffer is bounded: wait while the sender catches up rather than drop input.
            while case .dropped = continuation.yield(group) { usleep(1000) }
            i += maxBatch
        }
    }
}
