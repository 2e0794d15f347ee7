import Foundation
import NIOCore
import ObjectStorage
import StreamModel
import WriteBack
import WriteBackQueue

extension NodeCore {
    /// Answers an administrative command (`Request.admin`, and the admin HTTP server's `/queues` and `/dlq`) with
    /// a JSON document: the node's write-back queue and its dead letters. docs/operations.md lists the commands
    /// and the keys of their answers.
    /// - Throws: ``EddyError/Code/invalidArgument`` for an unknown command or bad arguments;
    ///   ``EddyError/Code/unavailable`` when write-back is off or its queue is not open yet.
    public func admin(_ command: String, arguments text: String) async throws(EddyError) -> String {
        let arguments: [String: Any]
        if text.isEmpty {
            arguments = [:]
        } else {
            guard let data = text.data(using: .utf8),
                let parsed = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            else { throw EddyError(.invalidArgument, "admin arguments must be a JSON object, got '\(text)'") }
            arguments = parsed
        }
        if command == "whatif" { return try whatIfJSON() }
        guard let writeBack else {
            throw EddyError(.unavailable, "write-back is off on \(me) (start the node with --object-store)")
        }
        guard let queue = writeBack.queue.withLock({ $0 }) else {
            throw EddyError(.unavailable, "the write-back queue of \(me) is not open yet (is the store reachable?)")
        }
        let queueName = arguments["queue"] as? String
        let ids = (arguments["ids"] as? [Any])?.compactMap { ($0 as? NSNumber)?.uint64Value }
        switch command {
        case "dlq.list":
            let letters = queue.deadLetters(queue: queueName)
            return Self.json(["dead_letters": letters.map { Self.describe($0.message, deadAt: $0.deadAt) }])
        case "dlq.show":
            guard let id = (arguments["id"] as? NSNumber)?.uint64Value else {
                throw EddyError(.invalidArgument, "dlq.show needs {\"id\": N}")
            }
            guard let letter = queue.deadLetters().first(where: { $0.message.id == id }) else {
                throw EddyError(.invalidArgument, "no dead letter \(id) on \(me)")
            }
            var described = Self.describe(letter.message, deadAt: letter.deadAt)
            described["payload_base64"] = Data(letter.message.payload).base64EncodedString()
            return Self.json(["dead_letter": described])
        case "dlq.redrive":
            guard ids != nil || queueName != nil || arguments["all"] as? Bool == true else {
                throw EddyError(.invalidArgument, "dlq.redrive needs ids, a queue or all")
            }
            let perSecond = (arguments["per_second"] as? NSNumber)?.doubleValue ?? 100
            do {
                let count = try await queue.redrive(ids: ids, queue: queueName, perSecond: max(perSecond, 0.1))
                return Self.json(["redriven": count])
            } catch {
                throw EddyError(.invalidArgument, error.description)
            }
        case "dlq.purge":
            guard ids != nil || queueName != nil || arguments["all"] as? Bool == true else {
                throw EddyError(.invalidArgument, "dlq.purge needs ids, a queue or all")
            }
            do {
                return Self.json(["purged": try await queue.purge(ids: ids, queue: queueName)])
            } catch {
                throw EddyError(.invalidArgument, error.description)
            }
        case "queue.stats":
            let metrics = queue.metrics()
            let lanes = metrics.lanes.keys.sorted().map { key -> [String: Any] in
                let lane = metrics.lanes[key]!
                return [
                    "queue": key.queue, "qos": key.qos.description, "ready": lane.ready, "delayed": lane.delayed,
                    "leased": lane.leased, "oldest_age_ms": lane.oldestAgeMilliseconds,
                ]
            }
            return Self.json([
                "lanes": lanes, "dead_letters": metrics.deadLetters, "enqueued": metrics.enqueued,
                "acked": metrics.acked, "retries": metrics.retries, "expiries": metrics.expiries,
                "dead_lettered": metrics.deadLettered, "worker_restarts": queue.workerRestarts,
                "journal_rolls": queue.rolledJournalSegments,
            ])
        case "queue.journal":
            return try await journalDocument(writeBack, limit: (arguments["limit"] as? NSNumber)?.intValue ?? 1000)
        default:
            throw EddyError(
                .invalidArgument,
                "unknown admin command '\(command)': dlq.list, dlq.show, dlq.redrive, dlq.purge, queue.stats, queue.journal"
            )
        }
    }

    /// The journal ranges this node's queue rolled to object storage, and their records (up to `limit`).
    func journalDocument(_ writeBack: WriteBack, limit: Int) async throws(EddyError) -> String {
        let stream = try WriteBack.journalStream(node: me)
        let folder = ObjectKey.join(writeBack.prefix, "_journal/\(stream.stream)/")
        do {
            var archives: [[String: Any]] = []
            var records: [[String: Any]] = []
            for info in try await writeBack.objects.listAll(prefix: folder) {
                let start = UInt64(info.key.split(separator: "/").last?.dropLast(4) ?? "") ?? 0
                let bytes = try await writeBack.objects.get(info.key)
                let decoded = try JournalFrames.decode(bytes, base: start)
                archives.append(["key": info.key, "start": start, "bytes": info.size, "records": decoded.count])
                for (offset, record) in decoded where records.count < limit {
                    var entry = Self.describe(record)
                    entry["offset"] = offset
                    records.append(entry)
                }
            }
            return Self.json(["journal": stream.description, "archives": archives, "records": records])
        } catch let error as QueueError {
            throw EddyError(.corruptData, error.description)
        } catch {
            throw EddyError(.unavailable, "object store: \(error)")
        }
    }

    static func describe(_ message: QueueMessage, deadAt: Int64) -> [String: Any] {
        [
            "id": message.id, "queue": message.queue, "qos": message.qos.description, "attempts": message.attempts,
            "expiries": message.expiries, "deliveries": message.deliveries, "enqueued_at_ms": message.enqueuedAt,
            "dead_at_ms": deadAt, "last_error": message.lastError, "attributes": message.attributes,
            "payload_bytes": message.payload.count, "cost": message.cost,
        ]
    }

    static func describe(_ record: JournalRecord) -> [String: Any] {
        switch record {
        case .put(let message, let availableAt, let deadAt):
            var entry = describe(message, deadAt: deadAt)
            entry["type"] = "put"
            entry["available_at_ms"] = availableAt
            return entry
        case .lease(let id): return ["type": "lease", "id": id]
        case .ack(let id): return ["type": "ack", "id": id]
        case .nack(let id, let attempts, let availableAt, let error):
            return ["type": "nack", "id": id, "attempts": attempts, "available_at_ms": availableAt, "error": error]
        case .expire(let id): return ["type": "expire", "id": id]
        case .dead(let id, let at, let reason): return ["type": "dead", "id": id, "at_ms": at, "reason": reason]
        case .redrive(let id, let availableAt): return ["type": "redrive", "id": id, "available_at_ms": availableAt]
        case .purge(let id): return ["type": "purge", "id": id]
        case .snapshotBegin(let next): return ["type": "snapshot_begin", "next_id": next]
        case .snapshotEnd: return ["type": "snapshot_end"]
        }
    }

    static func json(_ object: [String: Any]) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
