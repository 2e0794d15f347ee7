import CacheNode
import EddyAuth
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import StreamModel
import Testing
import WireProtocol

/// Per-tenant byte rates on a node: what a tenant is served counts, like what it sends.
@Suite("tenant rates on a node", .serialized)
struct NodeRateTests {
    static let tokens = """
        {"tokens": [
          {"token": "t-root", "principal": "service", "grants": [{"scope": "*", "roles": ["admin"]}]},
          {"token": "t-reader", "principal": "reader", "grants": [{"scope": "tenant-a/*", "roles": ["read"]}]}
        ]}
        """

    @Test(
        "a tenant served more bytes than its rate allows waits before its next request; the service identity never does"
    )
    func readBytesCharged() async throws {
        let access = AccessControl(
            setting: .tokens(path: "(test)"), authenticator: try TokensFile(json: Data(Self.tokens.utf8), source: "t"))
        let ring = try await NodeRing(count: 1) { c in
            c.access = access
            c.serviceToken = "t-root"
            c.rates = TenantRates(bytesPerSecond: 20_000)
        }
        let root = try await StoreClient.connect(to: ring.addresses[0], token: "t-root")
        let name = try StreamName(parsing: "tenant-a/node-rate")
        _ = try await root.send(.createStream(name, segments: 1))
        let segment = SegmentID(stream: name, number: 0)
        let batch = try (0..<200).flatMap { _ in
            try EventFrame.encode(Event(timestamp: 1, payload: [UInt8](repeating: 0x62, count: 1000)))
        }
        _ = try await root.send(
            .append(segment: segment, writerID: "", firstEventNumber: 0, frames: ByteBuffer(bytes: batch)))

        let reader = try await StoreClient.connect(to: ring.addresses[0], token: "t-reader")
        // One answer is far over a second's worth.
        guard
            case .readResult(_, _, let data) = try await reader.send(
                .read(segment: segment, offset: 0, maxBytes: 1 << 20, waitMilliseconds: 0))
        else {
            Issue.record("no read result")
            return
        }
        let served = data.readableBytes
        #expect(served > 20_000, "the read served \(served) bytes")
        do {
            _ = try await reader.send(.streamInfo(name))
            Issue.record("a tenant just served \(served) bytes at 20,000 a second was served again at once")
        } catch {
            #expect(error.code == .overloaded && error.message.contains("bytes a second"), "\(error)")
        }
        _ = try await root.send(.streamInfo(name))
        await reader.close()
        await root.close()
        await ring.shutdown()
    }
}
