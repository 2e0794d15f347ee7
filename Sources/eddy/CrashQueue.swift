import ArgumentParser
import Foundation
import Logging
import StoreClient
import StreamModel
import WireProtocol
import WriteBackQueue

/// The child of the queue crash test (`Tests/EddyCLITests/QueueCrashTests.swift`): it opens a write-back queue
/// journaled on a store stream, enqueues forever from two producers while two workers consume, and prints
/// `ENQ <id>` once an enqueue is acknowledged (durable) and `RUN <id>` when a handler starts on a message. The
/// test SIGKILLs it and checks, on the replayed journal, that every acknowledged enqueue is still there or was run.
struct CrashQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-queue", abstract: "Crash-test child: enqueue and consume forever, print what happened.",
        shouldDisplay: false)

    @Option(name: .long, help: "The store, HOST:PORT.") var store: String
    @Option(name: .long, help: "The journal stream.") var stream: String = "_eddy/queue-crash"

    func run() async throws {
        try await reportingErrors {
            let address = try ServerAddress(parsing: store)
            let journal = try await StoreJournalLog(stream: try StreamName(parsing: stream)) {
                try await StoreClient.connect(to: address)
            }
            var logger = Logger(label: "eddy.crash-queue")
            logger.logLevel = .warning
            var configuration = QueueConfiguration()
            configuration.compactionThresholdBytes = 64 << 10  // compact often, so kills land in every phase
            let queue = try await WriteBackQueue.open(configuration: configuration, journal: journal, logger: logger)
            let output = Output.shared
            queue.handle("work") { message in
                output.line("RUN \(message.id)")
                output.flush()
                try await Task.sleep(for: .milliseconds(2))
            }
            queue.start(workers: 2)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for producer in 0..<2 {
                    group.addTask {
                        var i = 0
                        while true {
                            let qos: QoSClass = i % 3 == 0 ? .bulk : .standard
                            let id = try await queue.enqueue(
                                "work", qos: qos, payload: Array("p\(producer)-\(i)".utf8))
                            output.line("ENQ \(id)")
                            output.flush()
                            i += 1
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}
