import EddyTestSupport
import Foundation
import Testing

@testable import SegmentStore
@testable import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

/// The crash test: `eddy crash-writer` appends from four writers and logs every acknowledgement; it is
/// SIGKILLed at random moments, restarted on the same data, again and again. Afterwards every acknowledged
/// event must be in the store exactly once, at its acknowledged offset, written by the run that acknowledged
/// it (each run tags its payloads, so an acknowledged event that was lost and written again by a later run is
/// caught), and each writer's events must be its event numbers 0, 1, 2, ... in order, with no duplicate and no gap.
@Suite("crash recovery under SIGKILL", .serialized)
struct CrashTests {
    struct Ack: Hashable {
        var round: Int
        var writer: Int
        var first: Int64
        var count: Int
        var offset: UInt64
    }

    @Test("24 random SIGKILLs lose no acknowledged event and duplicate none")
    func sigkill() throws {
        let data = temporaryPath("crash")
        defer { try? FileManager.default.removeItem(atPath: data) }
        var acks: [Ack] = []
        var generator = SystemRandomNumberGenerator()
        let rounds = 24
        for round in 0..<rounds {
            let ackPath = data + "-acks-\(round)"
            _ = FileManager.default.createFile(atPath: ackPath, contents: nil)
            defer { try? FileManager.default.removeItem(atPath: ackPath) }
            let errorPath = ackPath + ".err"
            defer { try? FileManager.default.removeItem(atPath: errorPath) }
            let child = try ChildProcess(
                eddyBinary,
                [
                    "crash-writer", "--data", data, "--writers", "4", "--io", round % 3 == 2 ? "posix" : "auto",
                    "--tag", "r\(round)",
                ], output: .file(ackPath), error: .file(errorPath))
            usleep(UInt32.random(in: 150_000...700_000, using: &generator))
            let exitedBefore = !child.isRunning
            child.kill()
            let stderr = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            #expect(!exitedBefore, "round \(round): the child exited by itself: \(stderr)")
            let text = try String(contentsOfFile: ackPath, encoding: .utf8)
            // Only whole lines: the kill may cut the last one.
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                let f = line.split(separator: " ")
                guard f.count == 5, f[0] == "ACK", let w = Int(f[1]), let n = Int64(f[2]), let c = Int(f[3]),
                    let o = UInt64(f[4])
                else {
                    Issue.record("bad ack line '\(line)'")
                    continue
                }
                acks.append(Ack(round: round, writer: w, first: n, count: c, offset: o))
            }
        }
        #expect(acks.count > 200, "too few acknowledgements (\(acks.count)) for the test to mean anything")

        var configuration = StoreConfiguration(dataDirectory: data)
        configuration.logger.logLevel = .warning
        let store = try SegmentStore(configuration: configuration)
        defer { store.close() }
        let stream = try StreamName(parsing: "crash/test")
        // Every event by (writer, event number) with its offset.
        var found: [Int: [(number: Int64, offset: UInt64, tag: String)]] = [:]
        for s in try store.info(stream).segments {
            // One read returns at most the store's read limit (16 MiB): read on until the end.
            var bytes: [UInt8] = []
            while bytes.count < Int(s.length) {
                let part = try store.read(s.segment, from: UInt64(bytes.count), maxBytes: Int(s.length) - bytes.count)
                    .data
                guard !part.isEmpty else { break }
                bytes += part
            }
            #expect(bytes.count == Int(s.length))
            var at = 0
            try bytes.withBytes { (b) throws(EddyError) in
                while at < b.count {
                    let (event, size) = try EventFrame.decode(b, at: at)
                    let text = String(decoding: event.payload, as: UTF8.self)
                    let parts = text.dropFirst().split(separator: "-")
                    let w = Int(parts[0])!
                    #expect(Int(s.segment.number) == w % 2)
                    found[w, default: []].append((Int64(parts[1])!, UInt64(at), String(parts[2])))
                    at += size
                }
            }
        }
        for (w, events) in found {
            #expect(events.map(\.number) == (0..<Int64(events.count)).map { $0 }, "writer \(w): duplicates or gaps")
        }
        for ack in acks {
            let events = found[ack.writer] ?? []
            for i in 0..<ack.count {
                let n = Int(ack.first) + i
                guard n < events.count else {
                    Issue.record("acknowledged event w\(ack.writer)-\(n) is missing")
                    break
                }
                #expect(
                    events[n].tag == "r\(ack.round)",
                    "w\(ack.writer)-\(n), acknowledged in round \(ack.round), was lost and rewritten in \(events[n].tag)"
                )
                if i == 0 { #expect(events[n].offset == ack.offset, "w\(ack.writer)-\(n) moved") }
            }
        }
    }
}
