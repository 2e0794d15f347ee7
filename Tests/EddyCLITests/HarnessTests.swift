import EddyTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether process `pid` is alive (a zombie, exited but not reaped, counts as dead).
func processAlive(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !stat.isEmpty && !stat.contains(") Z ")
}

@Suite("the test harness's processes")
struct HarnessTests {
    @Test("servers started through the harness die within 5 s of a SIGKILL of the process that started them")
    func noLeakAfterSIGKILL() async throws {
        let helper = try #require(builtProduct("eddy-test-helper"), "eddy-test-helper is not built")
        let folder = temporaryPath("harness")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/helper.out"
        let child = try ChildProcess(
            helper, [eddyBinary, folder, "3"], output: .file(out), error: .file(folder + "/helper.err"))
        defer { child.kill() }
        var pids: [pid_t] = []
        try await waitUntil(60, "the helper's servers") {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("pids: ") }) else { return false }
            pids = line.dropFirst("pids: ".count).split(separator: " ").compactMap { pid_t($0) }
            return true
        }
        try #require(pids.count == 3)
        #expect(pids.allSatisfy(processAlive), "the helper's servers run")
        // SIGKILL of the helper alone (not its group): no exit handler of its own runs.
        kill(child.pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, pids.contains(where: processAlive) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let left = pids.filter(processAlive)
        for pid in left { kill(pid, SIGKILL) }
        #expect(left.isEmpty, "still alive 5 s after their parent's SIGKILL: \(left)")
    }

    @Test("a child gets its own process group, its exit status, and the test run's marker")
    func childBasics() throws {
        let r = try runProgram(
            "/bin/sh", ["-c", "echo $EDDY_TEST_RUN; ps -o pgid= -p $$; exit 3"],
            environment: ["EDDY_TEST_RUN": "marker-1"])
        #expect(r.status == 3)
        let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.first == "marker-1")
        #expect(lines.count == 2 && lines[1] != String(getpgrp()), "the child runs in a group of its own: \(lines)")
        let killed = try ChildProcess("/bin/sleep", ["30"])
        killed.kill()
        #expect(killed.wait() == 128 + SIGKILL)
        #expect(!killed.isRunning)
    }
}
