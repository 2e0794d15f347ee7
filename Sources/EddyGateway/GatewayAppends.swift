import EddyClient
import Foundation
import NIOCore
import StreamModel

/// One event of a POST body.
struct IncomingEvent {
    var key: String?
    var payload: [UInt8]
}

/// How a POST body's events become appends: parsing (NDJSON or text lines), routing to segments, and the
/// exactly-once numbering of `Eddy-Writer` and `Eddy-Sequence`.
enum GatewayAppends {
    /// The largest `Eddy-Sequence` (2^42 - 1): a request's batch in a segment starts at event number
    /// sequence x 2^20, which must fit a signed 64-bit number.
    static let maximumSequence: Int64 = (1 << 42) - 1
    /// The most events of one request that go to one segment (the numbers of a sequence).
    static let maximumEventsPerSegment = 1 << 20
    /// Appends are cut into batches of about this many bytes of frames.
    static let batchBytes = 4 << 20

    /// The events of a body of `contentType` (`application/x-ndjson` or `text/plain`; `key` is the `?key=` of a
    /// text body).
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the line that is not an event, or the content type.
    static func parse(_ body: ByteBuffer, contentType: String, key: String?) throws(EddyError) -> [IncomingEvent] {
        let type = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        var lines = body.readableBytesView.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        func text(_ line: ArraySlice<UInt8>.SubSequence) -> [UInt8] {
            line.last == UInt8(ascii: "\r") ? Array(line.dropLast()) : Array(line)
        }
        let events: [IncomingEvent]
        switch type.lowercased() {
        case "text/plain":
            events = lines.map { IncomingEvent(key: key, payload: text(ArraySlice($0))) }
        case "application/x-ndjson", "application/ndjson", "application/jsonl":
            var parsed: [IncomingEvent] = []
            for (n, line) in lines.enumerated() {
                let bytes = text(ArraySlice(line))
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                parsed.append(try event(bytes, line: n + 1, key: key))
            }
            events = parsed
        default:
            throw EddyError(
                .invalidArgument,
                "Content-Type must be application/x-ndjson (one {\"key\", \"payload\"} a line) or text/plain (one "
                    + "event a line), not '\(contentType)'")
        }
        guard !events.isEmpty else { throw EddyError(.invalidArgument, "the body holds no event") }
        return events
    }

    private static func event(_ bytes: [UInt8], line: Int, key fallback: String?) throws(EddyError) -> IncomingEvent {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw EddyError(.invalidArgument, "line \(line) is not a JSON object")
        }
        var key = fallback
        switch object["key"] {
        case nil, is NSNull: break
        case let k as String: key = k
        default: throw EddyError(.invalidArgument, "line \(line): \"key\" must be a string or null")
        }
        if let payload = object["payload"] {
            guard let text = payload as? String else {
                throw EddyError(.invalidArgument, "line \(line): \"payload\" must be a string (or use payload_base64)")
            }
            return IncomingEvent(key: key, payload: Array(text.utf8))
        }
        if let encoded = object["payload_base64"] {
            guard let text = encoded as? String, let data = Data(base64Encoded: text) else {
                throw EddyError(.invalidArgument, "line \(line): \"payload_base64\" is not base64")
            }
            return IncomingEvent(key: key, payload: Array(data))
        }
        throw EddyError(.invalidArgument, "line \(line) has neither \"payload\" nor \"payload_base64\"")
    }

    /// The exactly-once identity of a request: `Eddy-Writer` and `Eddy-Sequence`, both or neither.
    struct Identity: Sendable {
        var writer: String
        var sequence: Int64

        /// The store's writer ID: a sequenced writer (docs/protocol.md), named after the header.
        var writerID: String { "~http:" + writer }
    }

    static func identity(writer: String?, sequence: String?) throws(EddyError) -> Identity? {
        switch (writer, sequence) {
        case (nil, nil): return nil
        case (let w?, let s?):
            guard !w.isEmpty, w.utf8.count <= 200, w.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
            else {
                throw EddyError(.invalidArgument, "Eddy-Writer must be 1 to 200 printable ASCII characters")
            }
            guard let n = Int64(s), (0...maximumSequence).contains(n) else {
                throw EddyError(.invalidArgument, "Eddy-Sequence must be a whole number from 0 to \(maximumSequence)")
            }
            return Identity(writer: w, sequence: n)
        default:
            throw EddyError(.invalidArgument, "Eddy-Writer and Eddy-Sequence go together: give both or neither")
        }
    }

    /// One segment's share of a request: its events' frames in body order, cut into batches.
    struct SegmentBatches: Sendable {
        var segment: SegmentID
        /// Each batch: its frames, their sizes, and the body index of each event.
        var batches: [(frames: [UInt8], sizes: [Int], indices: [Int])] = []
    }

    /// Encodes `events` and groups them by segment: a keyed event goes to its key's segment; unkeyed events go to
    /// `unkeyed`'s segment. Every event gets timestamp `now`.
    static func route(_ events: [IncomingEvent], stream: StreamInfo, unkeyed: UInt32, now: Int64)
        throws(EddyError) -> [SegmentBatches]
    {
        let count = UInt32(stream.segments.count)
        var bySegment: [UInt32: SegmentBatches] = [:]
        for (i, e) in events.enumerated() {
            let number = e.key.map { RoutingKey.segment(for: $0, segmentCount: count) } ?? unkeyed % count
            var share = bySegment[number] ?? SegmentBatches(segment: SegmentID(stream: stream.name, number: number))
            if share.batches.isEmpty || share.batches[share.batches.count - 1].frames.count >= batchBytes {
                share.batches.append(([], [], []))
            }
            let last = share.batches.count - 1
            let before = share.batches[last].frames.count
            try EventFrame.encode(
                Event(routingKey: e.key, timestamp: now, payload: e.payload), into: &share.batches[last].frames)
            share.batches[last].sizes.append(share.batches[last].frames.count - before)
            share.batches[last].indices.append(i)
            bySegment[number] = share
        }
        for share in bySegment.values where share.batches.reduce(0, { $0 + $1.sizes.count }) > maximumEventsPerSegment {
            throw EddyError(
                .frameTooLarge, "more than \(maximumEventsPerSegment) events for \(share.segment) in one request")
        }
        return bySegment.values.sorted { $0.segment.number < $1.segment.number }
    }

    /// Appends every share (segments at once, a segment's batches in order) and returns each event's pointer in
    /// body order, once all are durable. With `identity`, the batches are numbered from its sequence, so a retry
    /// of the request appends nothing and gets the same pointers.
    static func append(_ shares: [SegmentBatches], count: Int, identity: Identity?, client: EddyClient)
        async throws(EddyError) -> [EventPointer]
    {
        var results = [EventPointer?](repeating: nil, count: count)
        do {
            try await withThrowingTaskGroup(of: [(Int, EventPointer)].self) { group in
                for share in shares {
                    group.addTask {
                        var number = (identity?.sequence ?? 0) << 20
                        var placed: [(Int, EventPointer)] = []
                        for batch in share.batches {
                            let ack = try await client.append(
                                share.segment, frames: ByteBuffer(bytes: batch.frames),
                                writerID: identity?.writerID ?? "", firstEventNumber: identity == nil ? 0 : number)
                            number += Int64(batch.sizes.count)
                            placed += zip(batch.indices, ack.pointers(frameSizes: batch.sizes)).map { ($0, $1) }
                        }
                        return placed
                    }
                }
                for try await placed in group { for (i, p) in placed { results[i] = p } }
            }
        } catch {
            throw (error as? EddyError) ?? EddyError(.internalError, "append: \(error)")
        }
        return results.compactMap { $0 }
    }
}
