import EddyClient
import EddyTestSupport
import Foundation
import Testing
import WireProtocol

@testable import StreamModel

@Suite("client failover")
struct ClientFailoverTests {
    @Test("requests that all fail to reach a dead server move the client past it once, not once each")
    func concurrentConnectFailuresMoveOnce() async throws {
        let dead = try await Harness()
        let alive = try await Harness()
        var configuration = EddyClient.Configuration(servers: [dead.address, alive.address])
        configuration.inOrder = true
        let client = try await EddyClient.connect(configuration)
        #expect(client.server == dead.address)
        await dead.shutdown()
        try await Task.sleep(for: .milliseconds(300))  // the client's connection sees the close
        // Eight requests at once: each finds no live connection and connects to the first server, which refuses.
        // Moving the order once per failure would, with two servers, bring an even number of them back to it.
        let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    if case .streamList = try await client.send(.listStreams, timeout: .seconds(10)) { return true }
                    return false
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(answers.count == 8 && answers.allSatisfy { $0 })
        #expect(client.server == alive.address)
        #expect(client.failovers == 1, "the order moved \(client.failovers) times")
        await client.close()
        await alive.shutdown()
    }
}
