import EddyTestSupport
import Foundation
import Logging
import StoreClient
import StreamModel
import Testing
import WireProtocol
import WriteBackQueue

#if canImport(Glibc)
    import Glibc
#endif

/// SIGKILL of a process under queue load (`eddy crash-queue`, journaling on a real store): after each restart
/// no acknowledged enqueue is lost (it is still queued, or a handler ran it: at-least-once), and message IDs are
/// never handed out twice.
@Suite("the write-back queue killed under load, as real processes", .serialized)
struct QueueCrashTests {
    @Test("8 SIGKILLs under enqueue and consume load lose no acknowledged enqueue")
    func sigkillUnderLoad() async throws {
        let folder = temporaryPath("queue-crash")
        let address = "127.0.0.1:\(try freePort())"
        let store = try ServerProcess(
            ["store", "--data", folder + "/store", "--listen", address], log: folder + "-store.log",
            marker: "eddy store ready")
        defer { store.stop() }
        var enqueued: [Int: Int] = [:]  // ID -> round
        var ran: Set<Int> = []
        var generator = SystemRandomNumberGenerator()
        for round in 0..<8 {
            let outPath = folder + "-out-\(round)"
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            let errorPath = outPath + ".err"
            defer { try? FileManager.default.removeItem(atPath: errorPath) }
            let child = try ChildProcess(
                eddyBinary, ["crash-queue", "--store", address], output: .file(outPath), error: .file(errorPath))
            usleep(UInt32.random(in: 600_000...1_500_000, using: &generator))
            let exitedBefore = !child.isRunning
            child.kill()
            let stderr = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            #expect(!exitedBefore, "round \(round): the child exited: \(stderr)")
            // Whole lines only: the kill may cut the last one.
            let text = try String(contentsOfFile: outPath, encoding: .utf8)
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                let f = line.split(separator: " ")
                guard f.count == 2, let id = Int(f[1]) else {
                    Issue.record("bad line '\(line)'")
                    continue
                }
                if f[0] == "ENQ" {
                    #expect(enqueued[id] == nil, "message ID \(id) handed out again in round \(round)")
                    enqueued[id] = round
                } else {
                    ran.insert(id)
                }
            }
        }
        #expect(enqueued.count > 100, "too few enqueues (\(enqueued.count)) for the test to mean anything")
        #expect(!ran.isEmpty)

        // Replay the journal as a new owner would.
        let server = try ServerAddress(parsing: address)
        let journal = try await StoreJournalLog(stream: try StreamName(parsing: "_eddy/queue-crash")) {
            try await StoreClient.connect(to: server)
        }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let queue = try await WriteBackQueue.open(journal: journal, logger: logger)
        let live = Set(queue.liveMessages(queue: "work").map { Int($0.id) })
        let lost = enqueued.keys.filter { !live.contains($0) && !ran.contains($0) }
        #expect(lost.isEmpty, "acknowledged enqueues lost: \(lost.sorted().prefix(20))")
        await queue.shutdown()
    }
}
