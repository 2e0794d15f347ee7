import ArgumentParser
import Foundation
import Synchronization

/// CPUMeter measures the CPU time that processes used over a stretch of a benchmark, from `/proc/PID/stat`
/// (user + system time, fields 14 and 15, in clock ticks): the servers given with `--server-pids` and the
/// benchmark's own process. On this noisy 2-core machine CPU time per delivered event is steadier than latency.
struct CPUMeter {
    private let pids: [Int32]
    private let serverStart: [Int32: Double]
    private let ownStart: Double
    private let wallStart = ContinuousClock.now

    /// What was measured.
    struct Reading {
        /// CPU seconds the server processes used; nil when none was given.
        var serverSeconds: Double?
        /// CPU seconds this process used.
        var clientSeconds: Double
        /// Wall-clock seconds of the stretch.
        var wallSeconds: Double
        /// The machine's cores, for the share of them the client used.
        var cores: Int
        /// Servers that were gone at the end (their time is missing).
        var vanished: [Int32]

        /// The share of the machine's cores the client used.
        var clientShare: Double { clientSeconds / max(wallSeconds, 1e-9) / Double(cores) }

        /// The share the client used of the CPU time the servers left it (of all the cores' time when no server
        /// was measured): near 1, the readers, not the server, were the limit (on a machine the bench shares
        /// with the servers, it took whatever they did not use).
        var clientShareOfRest: Double {
            let rest = wallSeconds * Double(cores) - (serverSeconds ?? 0)
            return clientSeconds / max(rest, 1e-9)
        }

        /// Whether the readers were the bottleneck: they used 90 % or more of the CPU left to them.
        var clientSaturated: Bool { clientShareOfRest >= 0.9 }
    }

    /// Starts measuring `pids` (and this process).
    /// - Throws: `ValidationError` naming a PID that has no readable `/proc/PID/stat`.
    init(pids: [Int32]) throws {
        self.pids = pids
        var start: [Int32: Double] = [:]
        for pid in pids {
            guard let s = Self.cpuSeconds(pid) else {
                throw ValidationError("--server-pids: no process \(pid) (cannot read /proc/\(pid)/stat)")
            }
            start[pid] = s
        }
        serverStart = start
        ownStart = Self.cpuSeconds(nil) ?? 0
    }

    /// Parses `--server-pids P,Q,...`.
    static func parsePIDs(_ text: String?) throws -> [Int32] {
        guard let text, !text.isEmpty else { return [] }
        return try text.split(separator: ",").map { part in
            guard let pid = Int32(part.trimmingCharacters(in: .whitespaces)), pid > 0 else {
                throw ValidationError("--server-pids: '\(part)' is not a process ID (expected P,Q,...)")
            }
            return pid
        }
    }

    /// The CPU time used since `init`.
    func read() -> Reading {
        var server = 0.0
        var vanished: [Int32] = []
        for pid in pids {
            if let now = Self.cpuSeconds(pid), let then = serverStart[pid] {
                server += now - then
            } else {
                vanished.append(pid)
            }
        }
        return Reading(
            serverSeconds: pids.isEmpty ? nil : server, clientSeconds: (Self.cpuSeconds(nil) ?? 0) - ownStart,
            wallSeconds: (ContinuousClock.now - wallStart).inSeconds,
            cores: ProcessInfo.processInfo.activeProcessorCount, vanished: vanished)
    }

    /// User + system CPU seconds of `pid` (nil: this process), from its stat line; nil when unreadable.
    static func cpuSeconds(_ pid: Int32?) -> Double? {
        let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
        guard let line = try? String(contentsOfFile: path, encoding: .utf8),
            let close = line.lastIndex(of: ")")
        else { return nil }
        // After the command name in parentheses (which may hold spaces): state is field 3, utime 14, stime 15.
        let fields = line[line.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// A CPUMeter started from inside a benchmark's tasks (when its readers are in place), read at the end.
final class CPUMeterBox: Sendable {
    private let pids: [Int32]
    private let meter = Mutex<CPUMeter?>(nil)

    init(pids: [Int32]) { self.pids = pids }

    /// Starts the meter now (a server that exited meanwhile is left out and reported as gone).
    func start() { meter.withLock { $0 = (try? CPUMeter(pids: pids)) ?? (try? CPUMeter(pids: [])) } }

    /// The reading since ``start()``; nil when it never started.
    func read() -> CPUMeter.Reading? { meter.withLock { $0 }?.read() }
}
