import Foundation
import SegmentStore
import StreamModel
import Synchronization

/// StoreReadCounters counts the reads the store served, in total and per stream, so read amplification can be
/// checked from the store's side: with a cache ring in front, each byte should be read from the store once.
///
/// A read that asks for bytes (`maxBytes` > 0) counts in `read_requests` and `read_bytes`; a read of 0 bytes is
/// a cache node waiting for a segment to grow (it learns the new length, not the bytes) and counts in
/// `length_waits`.
final class StoreReadCounters: Sendable {
    struct Counts: Codable {
        var readRequests: UInt64 = 0
        var readBytes: UInt64 = 0
        var lengthWaits: UInt64 = 0

        enum CodingKeys: String, CodingKey {
            case readRequests = "read_requests"
            case readBytes = "read_bytes"
            case lengthWaits = "length_waits"
        }
    }

    private let state = Mutex<[StreamName: Counts]>([:])

    /// Counts one answered read of `stream`.
    func count(_ stream: StreamName, asked: UInt32, bytes: Int) {
        state.withLock { s in
            if asked == 0 {
                s[stream, default: Counts()].lengthWaits += 1
            } else {
                s[stream, default: Counts()].readRequests += 1
                s[stream, default: Counts()].readBytes += UInt64(bytes)
            }
        }
    }

    /// The counts per stream now.
    func snapshot() -> [StreamName: Counts] { state.withLock { $0 } }

    /// The stats document: read counters in total at the top level, per stream under `streams`, and the
    /// journal's counters under `journal` (docs/operations.md).
    func json(_ journal: StoreStats) -> String {
        struct Document: Encodable {
            var role = "store"
            var total: Counts
            var streams: [String: Counts]
            var journal: [String: UInt64]

            enum Keys: String, CodingKey { case role, streams, journal }

            func encode(to encoder: Encoder) throws {
                try total.encode(to: encoder)
                var c = encoder.container(keyedBy: Keys.self)
                try c.encode(role, forKey: .role)
                try c.encode(streams, forKey: .streams)
                try c.encode(journal, forKey: .journal)
            }
        }
        let perStream = state.withLock { $0 }
        var total = Counts()
        for c in perStream.values {
            total.readRequests += c.readRequests
            total.readBytes += c.readBytes
            total.lengthWaits += c.lengthWaits
        }
        let document = Document(
            total: total, streams: Dictionary(uniqueKeysWithValues: perStream.map { ($0.key.description, $0.value) }),
            journal: [
                "syncs": journal.syncs, "records": journal.records, "events": journal.events,
                "bytes": journal.bytes, "duplicates": journal.duplicates, "checkpoints": journal.checkpoints,
            ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(document)) ?? Data("{}".utf8), as: UTF8.self)
    }
}
