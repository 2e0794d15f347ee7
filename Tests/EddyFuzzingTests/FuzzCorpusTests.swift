import CacheNode
import EddyAuth
import EddyConfig
import EddyFuzzing
import EddyTestSupport
import Foundation
import JWTKit
import NIOCore
import SegmentStore
import StreamModel
import Testing
import WireProtocol
import WriteBack
import WriteBackQueue

/// The fuzzers' corpus (`Fuzz/corpus/TARGET/`, committed): every file runs through its decoder in a normal build
/// (no crash, no trap), and the seeds named `valid-*` (real encoder output) must be accepted, so the fuzzers start
/// from inputs that reach deep into each format. `EDDY_WRITE_FUZZ_CORPUS=1 swift test --filter FuzzCorpusTests`
/// writes the seeds again from the current encoders.
@Suite("fuzz corpus", .serialized)
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")

    @Test("every corpus file decodes or is refused without a crash; the valid seeds are accepted")
    func corpusRuns() async throws {
        if ProcessInfo.processInfo.environment["EDDY_WRITE_FUZZ_CORPUS"] != nil { try await Self.writeSeeds() }
        for target in FuzzTarget.allCases {
            let folder = Self.corpus.appendingPathComponent(target.rawValue)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            #expect(names.contains { $0.hasPrefix("valid-") }, "\(target.rawValue) has no valid seed")
            for name in names.sorted() {
                let bytes = Array(try Data(contentsOf: folder.appendingPathComponent(name)))
                let accepted = target.run(bytes)
                if name.hasPrefix("valid-") { #expect(accepted, "\(target.rawValue)/\(name) is refused") }
            }
        }
    }

    @Test("strings on the wire must be UTF-8: a writer ID of invalid bytes is refused, not mangled")
    func invalidUTF8() throws {
        let segment = SegmentID(stream: try StreamName(parsing: "fuzz/stream"), number: 1)
        let valid = MessageCodec.frame(.writerState(segment, writerID: "abc"), id: 1)
        var body = ByteBuffer()
        // The same request with the writer ID's three bytes replaced by 40,000 bytes that are not UTF-8.
        var original = valid.body
        let prefix = original.readBytes(length: original.readableBytes - 5)!
        body.writeBytes(prefix)
        body.writeInteger(UInt16(40_000))
        body.writeBytes([UInt8](repeating: 0xFF, count: 40_000))
        #expect(throws: EddyError.self) { try MessageCodec.request(Frame(type: valid.type, requestID: 1, body: body)) }
        #expect(FuzzTarget.request.run([valid.type] + Array(body.readableBytesView)) == false)
    }

    @Test("a string longer than its length field allows is cut at a whole character, and decodes")
    func longStrings() throws {
        let segment = SegmentID(stream: try StreamName(parsing: "fuzz/stream"), number: 1)
        let long = String(repeating: "é", count: 40_000)  // 80,000 bytes: cut to 65,534, not 65,535
        let frame = MessageCodec.frame(.writerState(segment, writerID: long), id: 1)
        guard case .writerState(_, let writerID) = try MessageCodec.request(frame) else {
            Issue.record("not a writer state")
            return
        }
        #expect(writerID.utf8.count == 65_534)
        #expect(long.hasPrefix(writerID))
    }

    // MARK: - Seeds

    static func writeSeeds() async throws {
        for (target, seeds) in try await Self.seeds() {
            let folder = corpus.appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for (name, bytes) in seeds {
                try Data(bytes).write(to: folder.appendingPathComponent("valid-\(name)"))
            }
        }
    }

    static func frameBytes(_ frame: Frame) -> [UInt8] { [frame.type] + Array(frame.body.readableBytesView) }

    static func wire(_ frame: Frame) -> [UInt8] {
        var out = ByteBuffer()
        try! FrameEncoder().encode(data: frame, out: &out)
        return Array(out.readableBytesView)
    }

    static func seeds() async throws -> [(FuzzTarget, [(String, [UInt8])])] {
        let stream = try StreamName(parsing: "fuzz/stream")
        let segment = SegmentID(stream: stream, number: 1)
        let events = [
            Event(timestamp: 1_700_000_000_000, payload: Array("first event".utf8)),
            Event(routingKey: "key-7", timestamp: 1_700_000_000_001, payload: Array(repeating: 0x41, count: 300)),
        ]
        let frames = try events.flatMap { try EventFrame.encode($0) }
        let requests: [(String, Request)] = [
            ("hello", .hello(version: protocolVersion, token: "a-token")),
            ("create", .createStream(stream, segments: 4)),
            (
                "append",
                .append(segment: segment, writerID: "w", firstEventNumber: 3, frames: ByteBuffer(bytes: frames))
            ),
            ("read", .read(segment: segment, offset: 40, maxBytes: 1 << 16, waitMilliseconds: 500)),
            ("truncate", .truncate(segment, offset: 12)),
            ("list", .listStreams),
        ]
        let info = SegmentInfo(segment: segment, startOffset: 0, length: UInt64(frames.count), sealed: true)
        let responses: [(String, Response)] = [
            ("hello", .helloOK(version: protocolVersion, maxFrameSize: 1 << 24, zone: "z1")),
            ("read", .readResult(offset: 0, info: info, data: ByteBuffer(bytes: frames))),
            ("error", .error(EddyError(.forbidden, "alice may not read fuzz/stream"))),
            ("writer", .writerState(41)),
        ]
        let message = QueueMessage(
            id: 9, queue: "flush", qos: .standard, payload: Array("task".utf8),
            attributes: ["segment": "fuzz/stream/1"],
            enqueuedAt: 1_700_000_000_000)
        let records: [(String, JournalRecord)] = [
            ("put", .put(message, availableAt: 1_700_000_000_000, deadAt: 1_800_000_000_000)),
            ("nack", .nack(9, attempts: 2, availableAt: 1_700_000_001_000, error: "S3 503")),
            ("dead", .dead(9, at: 1_700_000_002_000, reason: "5 attempts")),
        ]
        let block = BlockObject(segment: 1, start: 0, bytes: ByteBuffer(bytes: frames))
        var manifest = SegmentManifest(segment: segment)
        manifest.flushed = UInt64(frames.count)
        manifest.eventBoundary = UInt64(frames.count)
        manifest.nextFrame = UInt64(frames.count)
        manifest.objects = 1
        let (journal, checkpoint) = try await storeFiles(stream: stream, frames: frames)
        let tokens = """
            {"tokens": [{"token": "t-1", "principal": "alice", "grants": [{"scope": "tenant-a/*", "roles": ["read", "write"]}]}]}
            """
        let keyFile = """
            {"issuer": "fuzz", "audience": "eddy", "keys": [{"kid": "h", "alg": "HS256", "secret": "\(FuzzTarget.jwtSecret)"}]}
            """
        return [
            (.frame, requests.map { ($0.0, wire(MessageCodec.frame($0.1, id: 3))) }),
            (.request, requests.map { ($0.0, frameBytes(MessageCodec.frame($0.1, id: 3))) }),
            (.response, responses.map { ($0.0, frameBytes(MessageCodec.frame($0.1, id: 3))) }),
            (.event, [("two", frames)]),
            (.storeJournal, [("journal", [2] + journal)]),  // even first byte: raw; 2: the last journal file
            (.checkpoint, [("checkpoint", [0] + checkpoint)]),
            (.queueRecord, records.map { ($0.0, $0.1.encoded()) }),
            (
                .queueJournal,
                [
                    (
                        "records",
                        [0]
                            + Array(
                                JournalFrames.encode(records.map { $0.1.encoded() }, timestamp: 1).readableBytesView)
                    )
                ]
            ),
            (.blockObject, [("zstd", [0] + Array(block.encoded(level: 1).readableBytesView))]),
            (.manifest, [("manifest", Array(try JSONEncoder().encode(manifest)))]),
            (.config, [("example", Array(ConfigFile.example().utf8))]),
            (.tokens, [("tokens", Array(tokens.utf8))]),
            (.jwtKeys, [("keys", Array(keyFile.utf8))]),
            (.jwt, [("hs256", Array(try await token().utf8))]),
            (
                .kubernetesAuth,
                [
                    ("yaml", Array(Self.kubernetesFile.utf8)),
                    (
                        "json-inline",
                        Array(
                            """
                            {"issuer": "\(FuzzTarget.clusterIssuer)", "audience": "eddy", "jwks": \(FuzzTarget.clusterJWKS),
                             "tokens": [{"token": "t-node", "principal": "node", "grants": [{"scope": "*", "roles": ["admin"]}]}]}
                            """.utf8)
                    ),
                ]
            ),
            (.kubernetesToken, [("es256", Array(try await Self.serviceAccountToken().utf8))]),
            (
                .text,
                [
                    ("name", Array("fuzz/stream".utf8)),
                    ("pointer", Array("fuzz/stream/00000001/00000000000000000040+142".utf8)),
                ]
            ),
        ]
    }

    /// A real store's journal file and checkpoint: a stream made, events appended, the store closed.
    static func storeFiles(stream: StreamName, frames: [UInt8]) async throws -> (journal: [UInt8], checkpoint: [UInt8])
    {
        let directory = NSTemporaryDirectory() + "eddy-fuzz-seed-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SegmentStore(configuration: StoreConfiguration(dataDirectory: directory))
        try await store.createStream(stream, segments: 2)
        _ = try await store.append(SegmentID(stream: stream, number: 1), frames: frames, writerID: "w")
        let journalFolder = directory + "/journal"
        let journalName = try #require(try FileManager.default.contentsOfDirectory(atPath: journalFolder).sorted().last)
        let journal = Array(try Data(contentsOf: URL(fileURLWithPath: journalFolder + "/" + journalName)))
        store.close()
        let checkpointName = try #require(
            try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.contains("checkpoint") })
        let checkpoint = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + checkpointName)))
        return (journal, checkpoint)
    }

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iss: IssuerClaim
        var aud: AudienceClaim
        var grants: [Grant]
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static let kubernetesFile = """
        issuer: \(FuzzTarget.clusterIssuer)
        audience: eddy
        jwks_file: cluster-jwks.json
        grants:
          default:
            - scope: "{namespace}/*"
              roles: [read, write]
          accounts:
            "system:serviceaccount:ops:backup":
              - scope: "*"
                roles: [read]
        """

    /// A projected token of `system:serviceaccount:shop:web` from the fuzzing cluster, valid until 2100.
    static func serviceAccountToken() async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: try ES256PrivateKey(pem: FuzzTarget.clusterKey.pemRepresentation), kid: "fuzz-ec")
        return try await KubernetesTokenIssuer.sign(
            with: keys, kid: "fuzz-ec", namespace: "shop", account: "web", issuer: FuzzTarget.clusterIssuer,
            from: Date(timeIntervalSince1970: 1_600_000_000), until: Date(timeIntervalSince1970: 4_102_444_800))
    }

    /// An HS256 token for the `jwt` target's key, valid until 2100.
    static func token() async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: FuzzTarget.jwtSecret), digestAlgorithm: .sha256, kid: "h")
        let claims = Claims(
            sub: SubjectClaim(value: "alice"), exp: ExpirationClaim(value: Date(timeIntervalSince1970: 4_102_444_800)),
            iss: IssuerClaim(value: "fuzz"), aud: AudienceClaim(value: ["eddy"]),
            grants: [Grant(scope: "tenant-a/*", roles: [.read])])
        return try await keys.sign(claims, kid: "h")
    }
}
