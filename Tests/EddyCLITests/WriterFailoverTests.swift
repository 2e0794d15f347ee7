import EddyTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Exactly-once writers through the ring while its nodes die: the scenario of issue 26 as a user runs it.
@Suite("exactly-once writers through a ring whose nodes are SIGKILLed", .serialized)
struct WriterFailoverTests {
    /// Four `eddy append --servers A,B,C --key K --writer W` processes, each fed 50 lines every 0.1 s, one stream
    /// of 4 segments, a random node SIGKILLed and restarted every 3 s (10 times). Every writer must keep running, print one
    /// pointer per line, and the stream must hold each writer's lines exactly once, in order.
    @Test("four writers survive a node SIGKILLed and restarted every 3 s, with no loss and no duplicate")
    func writersSurviveNodeKills() async throws {
        let killCount = Int(ProcessInfo.processInfo.environment["EDDY_WRITER_CHAOS_KILLS"] ?? "") ?? 10
        let ring = try Ring(nodes: 3)
        defer { ring.stopAll() }
        let servers = ring.nodeAddresses.joined(separator: ",")
        let created = try await eddyAsync(["create", "demo/chaos", "--segments", "4", "--server", ring.storeAddress])
        try #require(created.status == 0, "\(created.stderr)")

        let writerCount = 4
        let writers = try (0..<writerCount).map { w in
            try ChildProcess(
                eddyBinary,
                ["append", "demo/chaos", "--servers", servers, "--key", "key-\(w)", "--writer", "chaos\(w)"],
                input: .pipe, output: .file(ring.folder + "/writer-\(w).out"),
                error: .file(ring.folder + "/writer-\(w).err"))
        }
        defer { for w in writers { w.kill() } }

        // The feeders and the killer block (sleeps, process waits): they run on threads of their own.
        let sent = Locked([Int](repeating: 0, count: writerCount))
        let stop = Locked(false)
        let feeder = Task {
            try await offPool {
                var lines = [Int](repeating: 0, count: writerCount)
                while !stop.get() {
                    for (w, writer) in writers.enumerated() {
                        let batch = (lines[w]..<(lines[w] + 50)).map { "chaos\(w)-\($0)\n" }.joined()
                        if writer.write(batch) { lines[w] += 50 }
                    }
                    sent.set(lines)
                    usleep(100_000)
                }
                for writer in writers { writer.closeInput() }
            }
        }
        var kills = 0
        while kills < killCount {
            try await Task.sleep(for: .seconds(3))
            let victim = Int.random(in: 0..<ring.nodes.count)
            try await offPool { try ring.restartNode(victim) }
            kills += 1
            guard writers.allSatisfy(\.isRunning) else { break }
        }
        stop.set(true)
        try await feeder.value
        var statuses: [Int32?] = []
        for writer in writers { statuses.append(try await offPool { writer.wait(for: .seconds(60)) }) }
        let totals = sent.get()
        for w in 0..<writerCount {
            let err = (try? String(contentsOfFile: ring.folder + "/writer-\(w).err", encoding: .utf8)) ?? ""
            #expect(
                statuses[w] == 0,
                "writer \(w) ended with \(String(describing: statuses[w])) after \(kills) kills: \(err)")
            let pointers = ((try? String(contentsOfFile: ring.folder + "/writer-\(w).out", encoding: .utf8)) ?? "")
                .split(separator: "\n")
            #expect(pointers.count == totals[w], "writer \(w): \(pointers.count) pointers for \(totals[w]) lines")
        }

        // The stream, read back through the ring: each writer's lines exactly once and in order.
        let read = try await eddyAsync(["read", "demo/chaos", "--servers", servers])
        try #require(read.status == 0, "\(read.stderr)")
        var seen = [[Int]](repeating: [], count: writerCount)
        for line in read.stdout.split(separator: "\n") {
            let parts = line.dropFirst("chaos".count).split(separator: "-")
            guard parts.count == 2, let w = Int(parts[0]), let n = Int(parts[1]), w < writerCount else {
                Issue.record("unexpected event '\(line)'")
                continue
            }
            seen[w].append(n)
        }
        for w in 0..<writerCount {
            let exact = seen[w] == Array(0..<totals[w])
            let difference = firstDifference(seen[w], totals[w])
            #expect(
                exact, "writer \(w): \(seen[w].count) events for \(totals[w]) lines, first difference at \(difference)")
        }
    }

    private func firstDifference(_ got: [Int], _ count: Int) -> Int {
        zip(got, 0..<count).first { $0 != $1 }?.1 ?? min(got.count, count)
    }
}
