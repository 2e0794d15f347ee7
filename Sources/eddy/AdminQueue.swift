import ArgumentParser
import EddyClient
import Foundation
import StreamModel
import WireProtocol

func printJSON(_ object: Any) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}

func parseIDs(_ text: String?) throws -> [UInt64]? {
    guard let text else { return nil }
    return try text.split(separator: ",").map {
        guard let id = UInt64($0) else { throw ValidationError("--ids '\(text)': comma-separated message IDs") }
        return id
    }
}

struct AdminDLQ: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "A node's dead letters: flush tasks that failed their last attempt.",
        subcommands: [AdminDLQList.self, AdminDLQShow.self, AdminDLQRedrive.self, AdminDLQPurge.self])
}

struct AdminDLQList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the dead letters, oldest first.")
    @Option(name: .long, help: "Only this queue's.") var queue: String?
    @OptionGroup var output: FormatOption
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in
            let answer = try await admin.ask(.dlqList(queue: queue))
            let letters = answer["dead_letters"] as? [[String: Any]] ?? []
            if output.json {
                printJSON(answer)
                return
            }
            if letters.isEmpty { print("no dead letters") }
            for l in letters {
                let attributes = (l["attributes"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }
                    .map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print(
                    "\(l["id"] ?? "") \(l["queue"] ?? "") \(l["qos"] ?? "") attempts=\(l["attempts"] ?? 0) "
                        + "\(attributes) error: \(l["last_error"] ?? "")")
            }
        }
    }
}

struct AdminDLQShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "One dead letter, whole (JSON).")
    @Argument(help: "The message ID.") var id: UInt64
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in printJSON(try await admin.ask(.dlqShow(id: id))) }
    }
}

struct AdminDLQRedrive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redrive",
        abstract: "Send dead letters back to their queue with a fresh attempt count, at most --per-second a second.",
        discussion: "Ctrl-C stops it; what was redriven stays redriven.")
    @Option(name: .long, help: "Message IDs, comma-separated.") var ids: String?
    @Option(name: .long, help: "Every dead letter of this queue.") var queue: String?
    @Flag(name: .long, help: "Every dead letter.") var all = false
    @Option(name: .long, help: "Rate limit.") var perSecond: Double = 10
    @OptionGroup var target: AdminTarget

    func run() async throws {
        guard perSecond > 0 else { throw ValidationError("--per-second must be positive") }
        let chosen = try parseIDs(ids)
        guard chosen != nil || queue != nil || all else { throw ValidationError("give --ids, --queue or --all") }
        try await AdminConnection.with(target) { admin in
            let letters = try await admin.ask(.dlqList(queue: queue))["dead_letters"] as? [[String: Any]] ?? []
            let targets = chosen ?? letters.compactMap { ($0["id"] as? NSNumber)?.uint64Value }
            var done = 0
            for id in targets {
                let answer = try await admin.ask(.dlqRedrive(["ids": [id]]))
                done += (answer["redriven"] as? Int) ?? 0
                FileHandle.standardError.write(Data("redriven \(done)/\(targets.count)\r".utf8))
                if done < targets.count { try await Task.sleep(for: .milliseconds(Int64(1000 / perSecond))) }
            }
            FileHandle.standardError.write(Data("\n".utf8))
            print("redriven \(done) dead letter\(done == 1 ? "" : "s")")
        }
    }
}

struct AdminDLQPurge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "purge", abstract: "Delete dead letters.")
    @Option(name: .long, help: "Message IDs, comma-separated.") var ids: String?
    @Option(name: .long, help: "Every dead letter of this queue.") var queue: String?
    @Flag(name: .long, help: "Every dead letter.") var all = false
    @OptionGroup var target: AdminTarget

    func run() async throws {
        let chosen = try parseIDs(ids)
        guard chosen != nil || queue != nil || all else { throw ValidationError("give --ids, --queue or --all") }
        try await AdminConnection.with(target) { admin in
            var arguments: [String: Any] = ["all": all]
            if let chosen { arguments["ids"] = chosen }
            if let queue { arguments["queue"] = queue }
            let answer = try await admin.ask(.dlqPurge(arguments))
            print("purged \(answer["purged"] ?? 0)")
        }
    }
}

struct AdminQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "A node's write-back queue.",
        subcommands: [AdminQueueStats.self, AdminQueueJournal.self])
}

struct AdminQueueStats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Depth per queue and class, oldest age, leases, retries, dead letters (JSON).")
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in printJSON(try await admin.ask(.queueStats)) }
    }
}

struct AdminQueueJournal: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "The queue journal ranges the node rolled to object storage, and their records.")
    @Option(name: .long, help: "At most this many records.") var limit: Int = 1000
    @OptionGroup var output: FormatOption
    @OptionGroup var target: AdminTarget

    func run() async throws {
        try await AdminConnection.with(target) { admin in
            let answer = try await admin.ask(.queueJournal(limit: limit))
            if output.json {
                printJSON(answer)
                return
            }
            print("journal \(answer["journal"] ?? "")")
            for a in answer["archives"] as? [[String: Any]] ?? [] {
                print(
                    "archive \(a["key"] ?? "") start=\(a["start"] ?? 0) bytes=\(a["bytes"] ?? 0) records=\(a["records"] ?? 0)"
                )
            }
            for r in answer["records"] as? [[String: Any]] ?? [] {
                let rest = r.keys.filter { $0 != "offset" && $0 != "type" }.sorted().map { "\($0)=\(r[$0]!)" }
                print("\(r["offset"] ?? 0) \(r["type"] ?? "") \(rest.joined(separator: " "))")
            }
        }
    }
}
