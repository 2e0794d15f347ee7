// eddy-test-helper EDDY_BINARY FOLDER COUNT: starts COUNT `eddy store` servers (each in FOLDER/store-N, listening on
// 127.0.0.1, port chosen by the system) through the test harness's ChildProcess, prints `pids: P1 P2 ...` once all
// have started, then sleeps until it is killed. The leak test (HarnessTests) SIGKILLs it and checks that the
// servers die with it.
import EddyTestSupport
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 4, let count = Int(arguments[3]), count > 0 else {
    FileHandle.standardError.write(Data("usage: eddy-test-helper EDDY_BINARY FOLDER COUNT\n".utf8))
    exit(2)
}
let (binary, folder) = (arguments[1], arguments[2])
var children: [ChildProcess] = []
for i in 0..<count {
    let log = "\(folder)/store-\(i).log"
    let child = try ChildProcess(
        binary, ["store", "--data", "\(folder)/store-\(i)", "--listen", "127.0.0.1:0", "--admin-listen", "none"],
        error: .file(log))
    let deadline = Date().addingTimeInterval(30)
    while !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("eddy store ready") {
        guard Date() < deadline, child.isRunning else {
            FileHandle.standardError.write(Data("store \(i) did not start\n".utf8))
            exit(1)
        }
        usleep(20_000)
    }
    children.append(child)
}
FileHandle.standardOutput.write(Data(("pids: " + children.map { String($0.pid) }.joined(separator: " ") + "\n").utf8))
while true { sleep(60) }
