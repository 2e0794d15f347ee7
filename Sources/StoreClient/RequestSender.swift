import NIOCore
import StreamModel
import WireProtocol

/// RequestSender is one way to send requests and get answers: one connection (``StoreClient``) or a client
/// with failover (`EddyClient`). The typed calls (create, append, read, ...) are written once, here, on top of
/// ``send(_:timeout:)``.
public protocol RequestSender: Sendable {
    /// Sends a request and waits for its answer (at most `timeout`, when given); an error answer is thrown.
    func send(_ request: Request, timeout: Duration?) async throws(EddyError) -> Response
    /// The deadline of a read that may wait `wait` at the tail, or nil for none.
    func readTimeout(wait: Duration) -> Duration?
}

extension RequestSender {
    private func unexpected(_ response: Response, for what: String) -> EddyError {
        EddyError(.malformedFrame, "the server answered \(what) with \(response)")
    }

    /// Creates a stream.
    public func createStream(_ name: StreamName, segments: UInt32) async throws(EddyError) {
        _ = try await send(.createStream(name, segments: segments), timeout: nil)
    }

    /// Deletes a stream.
    public func deleteStream(_ name: StreamName) async throws(EddyError) {
        _ = try await send(.deleteStream(name), timeout: nil)
    }

    /// Every stream on the server.
    public func listStreams() async throws(EddyError) -> [StreamInfo] {
        let r = try await send(.listStreams, timeout: nil)
        guard case .streamList(let streams) = r else { throw unexpected(r, for: "list") }
        return streams
    }

    /// One stream's segments.
    public func info(_ name: StreamName) async throws(EddyError) -> StreamInfo {
        let r = try await send(.streamInfo(name), timeout: nil)
        guard case .streamInfo(let info) = r else { throw unexpected(r, for: "stream info") }
        return info
    }

    /// One segment's state.
    public func info(_ segment: SegmentID) async throws(EddyError) -> SegmentInfo {
        let r = try await send(.segmentInfo(segment), timeout: nil)
        guard case .segmentInfo(let info) = r else { throw unexpected(r, for: "segment info") }
        return info
    }

    /// Appends whole event frames to a segment; returns once they are durable. With a writer ID, a retry is
    /// answered with the original position (exactly-once).
    public func append(_ segment: SegmentID, frames: ByteBuffer, writerID: String = "", firstEventNumber: Int64 = 0)
        async throws(EddyError) -> AppendAck
    {
        let r = try await send(
            .append(segment: segment, writerID: writerID, firstEventNumber: firstEventNumber, frames: frames),
            timeout: nil)
        guard case .appendAck(let ack) = r else { throw unexpected(r, for: "append") }
        return ack
    }

    /// Reads bytes of a segment; `wait` > 0 waits at the tail for bytes to arrive.
    public func read(_ segment: SegmentID, from offset: UInt64, maxBytes: Int = 1 << 20, wait: Duration = .zero)
        async throws(EddyError) -> (info: SegmentInfo, data: ByteBuffer)
    {
        let ms = UInt32(clamping: Int64(wait.inSeconds * 1000))
        let r = try await send(
            .read(segment: segment, offset: offset, maxBytes: UInt32(clamping: maxBytes), waitMilliseconds: ms),
            timeout: readTimeout(wait: wait))
        guard case .readResult(_, let info, let data) = r else { throw unexpected(r, for: "read") }
        return (info, data)
    }

    /// Seals a segment.
    @discardableResult
    public func seal(_ segment: SegmentID) async throws(EddyError) -> SegmentInfo {
        let r = try await send(.seal(segment), timeout: nil)
        guard case .segmentInfo(let info) = r else { throw unexpected(r, for: "seal") }
        return info
    }

    /// Truncates a segment at an event boundary.
    @discardableResult
    public func truncate(_ segment: SegmentID, at offset: UInt64) async throws(EddyError) -> SegmentInfo {
        let r = try await send(.truncate(segment, offset: offset), timeout: nil)
        guard case .segmentInfo(let info) = r else { throw unexpected(r, for: "truncate") }
        return info
    }

    /// The highest event number `writerID` wrote to `segment`, or nil.
    public func lastEventNumber(_ segment: SegmentID, writerID: String) async throws(EddyError) -> Int64? {
        let r = try await send(.writerState(segment, writerID: writerID), timeout: nil)
        guard case .writerState(let last) = r else { throw unexpected(r, for: "writer state") }
        return last
    }

    /// The server's stats document (JSON).
    public func stats() async throws(EddyError) -> String {
        let r = try await send(.stats, timeout: nil)
        guard case .stats(let json) = r else { throw unexpected(r, for: "stats") }
        return json
    }
}
