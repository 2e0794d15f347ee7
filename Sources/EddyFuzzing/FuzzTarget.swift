import CacheNode
import Crypto
import Dispatch
import EddyAuth
import EddyConfig
import Foundation
import NIOCore
import NIOEmbedded
import SegmentStore
import StreamModel
import Synchronization
import WireProtocol
import WriteBack
import WriteBackQueue

/// One decoder of hostile input, run on arbitrary bytes by libFuzzer (`scripts/fuzz.sh`, the `EddyFuzz` executable)
/// and by the corpus test. Each decoder must answer every input with a value or a typed error: never a crash, a
/// hang or unbounded memory. Where a decoder has an encoder, what it decodes must encode and decode back to the
/// same value (a check that fails traps, which the fuzzer reports as a crash).
///
/// For formats behind a checksum (journal records, checkpoints, block objects), an input whose first byte is odd
/// is wrapped with a valid checksum first, so the parser behind the check is reached; an even first byte feeds
/// the rest raw, so the checks themselves are fuzzed too.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The protocol's frame codec (length, type, request ID) through the channel handler.
    case frame
    /// Every request message: the first byte is the frame type, the rest its body.
    case request
    /// Every response message, likewise.
    case response
    /// Event frames (the bytes of a segment).
    case event
    /// A journal file of the segment store.
    case storeJournal = "store-journal"
    /// A checkpoint file of the segment store.
    case checkpoint
    /// One record of the write-back queue's journal.
    case queueRecord = "queue-record"
    /// The queue journal's stream bytes (event frames of records).
    case queueJournal = "queue-journal"
    /// A block object from object storage.
    case blockObject = "block-object"
    /// A segment's manifest from object storage.
    case manifest
    /// A YAML configuration file.
    case config
    /// A tokens file (`--auth tokens:FILE`).
    case tokens
    /// A JWT key file (`--auth jwt:KEYFILE`).
    case jwtKeys = "jwt-keys"
    /// A bearer token checked as a JWT.
    case jwt
    /// A Kubernetes auth file (`--auth k8s:FILE`, JSON or YAML); its `jwks_file` is looked for in a folder that
    /// holds `cluster-jwks.json`.
    case kubernetesAuth = "k8s-auth"
    /// A bearer token checked as a projected service-account token (the fuzzing cluster's key set).
    case kubernetesToken = "k8s-token"
    /// The names and addresses users type: stream names, pointers, addresses, policies, `--auth`.
    case text

    /// The target named by `EDDY_FUZZ_TARGET` (what the `EddyFuzz` executable runs).
    public static func fromEnvironment() -> FuzzTarget {
        let name = ProcessInfo.processInfo.environment["EDDY_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            let names = allCases.map(\.rawValue).joined(separator: ", ")
            FileHandle.standardError.write(Data("EDDY_FUZZ_TARGET must be one of: \(names)\n".utf8))
            exit(2)
        }
        return target
    }

    /// Makes what the target builds once (keys, key sets, its folder), before any input runs.
    public func prepare() {
        switch self {
        case .jwt: _ = Self.keys
        case .kubernetesAuth: _ = Self.clusterFolder
        case .kubernetesToken: _ = Self.cluster
        default: break
        }
    }

    /// Decodes `bytes`; true when they were accepted (a valid input), false when refused with a typed error.
    @discardableResult
    public func run(_ bytes: [UInt8]) -> Bool {
        switch self {
        case .frame: return Self.frames(bytes)
        case .request: return Self.request(bytes)
        case .response: return Self.response(bytes)
        case .event: return Self.events(bytes)
        case .storeJournal: return Self.storeJournal(bytes)
        case .checkpoint: return Self.checkpoint(bytes)
        case .queueRecord: return Self.queueRecord(bytes)
        case .queueJournal: return Self.queueJournal(bytes)
        case .blockObject: return Self.blockObject(bytes)
        case .manifest:
            return (try? SegmentManifest.decode(bytes, key: "fuzz.manifest", segment: Self.segment)) != nil
        case .config:
            return (try? ConfigFile.parse(yaml: String(decoding: bytes, as: UTF8.self), source: "fuzz.yaml")) != nil
        case .tokens: return Self.tokens(bytes)
        case .jwtKeys:
            return blocking { (try? await JWTAuthenticator.load(json: Data(bytes), source: "fuzz.json")) != nil }
        case .jwt: return Self.jwt(bytes)
        case .kubernetesAuth: return Self.kubernetesAuth(bytes)
        case .kubernetesToken: return Self.kubernetesToken(bytes)
        case .text: return Self.text(bytes)
        }
    }

    static let segment = SegmentID(stream: try! StreamName(parsing: "fuzz/stream"), number: 1)

    static func frames(_ bytes: [UInt8]) -> Bool {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 1 << 20)))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            while let frame = try channel.readInbound(as: Frame.self) {
                precondition(frame.body.readableBytes <= 1 << 20, "a frame over the limit was decoded")
            }
            return true
        } catch {
            return false
        }
    }

    static func message(_ bytes: [UInt8]) -> Frame? {
        guard let type = bytes.first else { return nil }
        return Frame(type: type, requestID: 7, body: ByteBuffer(bytes: bytes.dropFirst()))
    }

    static func request(_ bytes: [UInt8]) -> Bool {
        guard let frame = message(bytes), let request = try? MessageCodec.request(frame) else { return false }
        let again = try? MessageCodec.request(MessageCodec.frame(request, id: 7))
        precondition(again == request, "a decoded request did not survive encoding: \(request)")
        return true
    }

    static func response(_ bytes: [UInt8]) -> Bool {
        guard let frame = message(bytes), let response = try? MessageCodec.response(frame) else { return false }
        let again = try? MessageCodec.response(MessageCodec.frame(response, id: 7))
        precondition(again == response, "a decoded response did not survive encoding: \(response)")
        return true
    }

    static func events(_ bytes: [UInt8]) -> Bool {
        guard let events = try? bytes.withUnsafeBytes({ try EventFrame.decodeAll($0) }) else { return false }
        for event in events {
            guard let encoded = try? EventFrame.encode(event) else {
                preconditionFailure("a decoded event does not encode: \(event)")
            }
            let back = try? encoded.withUnsafeBytes { try EventFrame.decode($0, at: 0).0 }
            precondition(back == event, "a decoded event did not survive encoding")
        }
        return true
    }

    /// The input after its first byte, wrapped by `seal` when that byte is odd.
    static func sealed(_ bytes: [UInt8], _ seal: ([UInt8]) -> [UInt8]) -> [UInt8] {
        guard let first = bytes.first else { return [] }
        let rest = Array(bytes.dropFirst())
        return first & 1 == 1 ? seal(rest) : rest
    }

    static func storeJournal(_ bytes: [UInt8]) -> Bool {
        let file = sealed(bytes) { StoreFormats.journalFile(recordBody: $0) }
        let isLast = (bytes.first ?? 0) & 2 == 2
        guard let (records, torn) = try? StoreFormats.scanJournal(file, path: "fuzz.log", isLast: isLast) else {
            return false
        }
        precondition(records >= 0 && torn >= 0 && torn <= file.count)
        return true
    }

    static func checkpoint(_ bytes: [UInt8]) -> Bool {
        let file = sealed(bytes) { StoreFormats.checkpointFile(content: $0) }
        return (try? StoreFormats.decodeCheckpoint(file, path: "fuzz.checkpoint")) != nil
    }

    static func queueRecord(_ bytes: [UInt8]) -> Bool {
        guard let record = try? JournalRecord.decode(bytes) else { return false }
        let again = try? JournalRecord.decode(record.encoded())
        precondition(again == record, "a decoded queue record did not survive encoding: \(record)")
        return true
    }

    static func queueJournal(_ bytes: [UInt8]) -> Bool {
        let stream = sealed(bytes) { Array(JournalFrames.encode([$0], timestamp: 1).readableBytesView) }
        return (try? JournalFrames.decode(ByteBuffer(bytes: stream), base: 0)) != nil
    }

    static func blockObject(_ bytes: [UInt8]) -> Bool {
        let object = sealed(bytes) { Self.withValidHeader($0) }
        guard let block = try? BlockObject.decode(ByteBuffer(bytes: object), key: "fuzz/block") else { return false }
        precondition(UInt64(block.bytes.readableBytes) == block.end - block.start, "a block's bytes and range differ")
        return true
    }

    /// `body` as a block object header and data: the magic, then the input, with the header's CRC32C (of its
    /// first 40 bytes, at byte 40: docs/protocol.md) made valid.
    static func withValidHeader(_ body: [UInt8]) -> [UInt8] {
        var object = Array("EDDYBLK1".utf8) + body
        if object.count < 44 { object += [UInt8](repeating: 0, count: 44 - object.count) }
        let crc = CRC32C.checksum(object[0..<40])
        object.replaceSubrange(40..<44, with: withUnsafeBytes(of: crc.bigEndian) { Array($0) })
        return object
    }

    static func tokens(_ bytes: [UInt8]) -> Bool {
        guard let file = try? TokensFile(json: Data(bytes), source: "fuzz.json") else { return false }
        _ = try? file.principal(for: "a token")
        return true
    }

    /// The HS256 secret of the `jwt` target's key file (the corpus signs its valid tokens with it).
    public static let jwtSecret = "a fuzzing secret of at least thirty-two bytes"

    /// The `jwt` target's key file: an HS256 key `h` and an ES256 key `e` (made at start), issuer `fuzz`,
    /// audience `eddy`.
    static let keys: JWTAuthenticator = blocking {
        let pem = P256.Signing.PrivateKey().publicKey.pemRepresentation.replacingOccurrences(of: "\n", with: "\\n")
        let json = """
            {"issuer": "fuzz", "audience": "eddy", "keys": [
              {"kid": "h", "alg": "HS256", "secret": "\(jwtSecret)"},
              {"kid": "e", "alg": "ES256", "public_key": "\(pem)"}
            ]}
            """
        do {
            return try await JWTAuthenticator.load(json: Data(json.utf8), source: "fuzz keys")
        } catch {
            preconditionFailure("the fuzzing key file does not load: \(error)")
        }
    }

    static func jwt(_ bytes: [UInt8]) -> Bool {
        let keys = Self.keys
        let token = String(decoding: bytes, as: UTF8.self)
        return blocking { (try? await keys.principal(for: token)) != nil }
    }

    /// The fuzzing cluster's ES256 signing key (fixed, so that the corpus's valid tokens stay valid; it signs
    /// nothing but them).
    public static let clusterKey = try! P256.Signing.PrivateKey(
        rawRepresentation: Array(repeating: 0, count: 31) + [7])

    /// The fuzzing cluster's issuer.
    public static let clusterIssuer = "https://kubernetes.default.svc"

    /// The fuzzing cluster's key set, as `/openid/v1/jwks` publishes it (key `fuzz-ec`).
    public static var clusterJWKS: String {
        let raw = Array(clusterKey.publicKey.rawRepresentation)
        func base64URL(_ bytes: ArraySlice<UInt8>) -> String {
            Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        return """
            {"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "kid": "fuzz-ec", "x": "\(base64URL(raw[0..<32]))", "y": "\(base64URL(raw[32..<64]))"}]}
            """
    }

    /// The folder the `k8s-auth` target's relative `jwks_file` names are looked for in.
    static let clusterFolder: String = {
        let folder = NSTemporaryDirectory() + "eddy-fuzz-k8s"
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try? clusterJWKS.write(toFile: folder + "/cluster-jwks.json", atomically: true, encoding: .utf8)
        return folder
    }()

    static func kubernetesAuth(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        let folder = clusterFolder
        return blocking {
            guard let auth = try? await KubernetesAuthenticator.load(text: text, source: "fuzz.yaml", folder: folder)
            else { return false }
            _ = try? await auth.principal(for: "not a token")
            return true
        }
    }

    /// The `k8s-token` target's cluster: issuer ``clusterIssuer``, audience `eddy`, the fixed key, a default
    /// grant of the token's namespace and one account of its own.
    static let cluster: KubernetesAuthenticator = blocking {
        let file = """
            {"issuer": "\(clusterIssuer)", "audience": "eddy", "jwks": \(clusterJWKS),
             "grants": {"default": [{"scope": "{namespace}/*", "roles": ["read"]}],
                        "accounts": {"system:serviceaccount:ops:backup": [{"scope": "*", "roles": ["read"]}]}}}
            """
        do {
            return try await KubernetesAuthenticator.load(text: file, source: "fuzz cluster", folder: "/nonexistent")
        } catch {
            preconditionFailure("the fuzzing cluster's auth file does not load: \(error)")
        }
    }

    static func kubernetesToken(_ bytes: [UInt8]) -> Bool {
        let cluster = Self.cluster
        let token = String(decoding: bytes, as: UTF8.self)
        return blocking { (try? await cluster.principal(for: token)) != nil }
    }

    static func text(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        var accepted = false
        if let name = try? StreamName(parsing: text) {
            precondition((try? StreamName(parsing: name.description)) == name, "a stream name did not survive printing")
            accepted = true
        }
        if let pointer = try? EventPointer(parsing: text) {
            precondition(
                (try? EventPointer(parsing: pointer.description)) == pointer, "a pointer did not survive printing")
            accepted = true
        }
        if (try? ServerAddress(parsing: text)) != nil { accepted = true }
        if (try? AuthSetting(parsing: text)) != nil { accepted = true }
        if (try? AdminListen(parsing: text)) != nil { accepted = true }
        return accepted
    }
}

/// Runs `body` to completion from synchronous code (the fuzzer's callback), on Swift's concurrency pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let value = await body()
        result.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
}
