import EddyTestSupport
import Foundation
import Testing

@testable import StreamModel

@Suite("eddy CLI against a real store process", .serialized)
struct CLITests {
    @Test("create, append, read (text, json, --from), info, seal; errors are one line and a non-zero exit")
    func roundTrip() throws {
        let data = temporaryPath("cli")
        defer {
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: data + ".log")
        }
        let store = try StoreProcess(data: data)
        let server = ["--server", store.address]

        let created = try eddy(["create", "cli/lines", "--segments", "1"] + server)
        #expect(created.status == 0, "\(created.stderr)")
        let lines = (0..<2000).map { "line \($0) " + String(repeating: "z", count: $0 % 37) }
        let appended = try eddy(
            ["append", "cli/lines", "--writer", "cli-test"] + server, input: lines.joined(separator: "\n") + "\n")
        #expect(appended.status == 0, "\(appended.stderr)")
        let pointers = appended.stdout.split(separator: "\n").map(String.init)
        #expect(pointers.count == lines.count)
        let parsed = try pointers.map { try EventPointer(parsing: $0) }
        #expect(parsed.map(\.offset) == parsed.map(\.offset).sorted())
        #expect(pointers == pointers.sorted(), "pointer text order is offset order")

        let read = try eddy(["read", "cli/lines"] + server)
        #expect(read.status == 0)
        #expect(
            read.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) == lines)

        let json = try eddy(["read", "cli/lines", "--format", "json"] + server)
        let objects = try json.stdout.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(objects.map { $0["pointer"] as! String } == pointers)
        #expect(objects.map { $0["payload"] as! String } == lines)

        let resumed = try eddy(["read", "cli/lines", "--from", pointers[1499]] + server)
        #expect(
            resumed.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
                == Array(lines[1500...]))

        // The same writer continues its event numbers: a second run appends, it is not taken for a retry.
        let more = try eddy(["append", "cli/lines", "--writer", "cli-test"] + server, input: "tail 1\ntail 2\n")
        #expect(more.stdout.split(separator: "\n").count == 2)
        let info = try eddy(["info", "cli/lines"] + server)
        #expect(info.stdout.contains("cli/lines/00000000 start=0"))

        let sealed = try eddy(["seal", "cli/lines"] + server)
        #expect(sealed.stdout.contains("sealed=true"))
        let refused = try eddy(["append", "cli/lines"] + server, input: "x\n")
        #expect(refused.status != 0)
        #expect(refused.stderr == "eddy: segment cli/lines/00000000 is sealed\n")
        for bad in [["read", "no/such"], ["create", "bad name/x"], ["read", "cli/lines", "--from", "cli/lines/9/0"]] {
            let r = try eddy(bad + server)
            #expect(r.status != 0, "\(bad) succeeded")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(bad): \(r.stderr)")
        }
        let unreachable = try eddy(["read", "cli/lines", "--server", "127.0.0.1:1"])
        #expect(unreachable.status != 0 && unreachable.stderr.hasPrefix("eddy: cannot connect to 127.0.0.1:1"))

        // A clean stop, then a restart that serves everything again.
        #expect(store.stop() == 0, "\(store.log)")
        let restarted = try StoreProcess(data: data)
        let again = try eddy(["read", "cli/lines", "--server", restarted.address])
        #expect(again.stdout.split(separator: "\n").count == lines.count + 2)
        _ = restarted.stop()
    }

    @Test("tail follows new events and stops when the stream is sealed")
    func tail() throws {
        let data = temporaryPath("tail")
        defer {
            try? FileManager.default.removeItem(atPath: data)
            try? FileManager.default.removeItem(atPath: data + ".log")
        }
        let store = try StoreProcess(data: data)
        defer { _ = store.stop() }
        let server = ["--server", store.address]
        _ = try eddy(["create", "cli/tail", "--segments", "3"] + server)
        _ = try eddy(["append", "cli/tail"] + server, input: "before\n")
        let outPath = data + "-tail.out"
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let tail = try ChildProcess(eddyBinary, ["tail", "cli/tail"] + server, output: .file(outPath))
        usleep(300_000)
        _ = try eddy(["append", "cli/tail", "--key", "k"] + server, input: "after-1\nafter-2\n")
        usleep(300_000)
        _ = try eddy(["seal", "cli/tail"] + server)
        let status = tail.wait(for: .seconds(30))
        if status == nil { tail.kill() }
        #expect(status == 0)
        let printed = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        // Segments are followed concurrently, so only the order within a segment is fixed.
        let lines = printed.split(separator: "\n").map(String.init)
        #expect(lines.sorted() == ["after-1", "after-2", "before"])
        #expect(lines.firstIndex(of: "after-1")! < lines.firstIndex(of: "after-2")!)
    }
}
