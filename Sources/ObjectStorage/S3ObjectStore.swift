import AsyncHTTPClient
import Crypto
import EddyTLS
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import StreamModel
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// S3Configuration says where a bucket is and how to reach it.
public struct S3Configuration: Sendable {
    /// The bucket.
    public var bucket: String
    /// The endpoint, `scheme://host[:port]` (`http://127.0.0.1:8333`); AWS's regional endpoint when nil.
    public var endpoint: String?
    /// The region of the signature's scope.
    public var region: String
    /// Path-style addressing (`host/bucket/key`, what most S3-compatible servers want) instead of virtual-host
    /// style (`bucket.host/key`, AWS's default).
    public var pathStyle: Bool
    /// The credentials that sign every request.
    public var credentials: AWSCredentials
    /// How long one attempt of a request may take, from connecting to the last body byte.
    public var requestTimeout: Duration
    /// How failed attempts are retried.
    public var retry: RetryPolicy
    /// The largest object a get reads into memory.
    public var maximumObjectBytes: Int
    /// The clock requests are signed with (tests skew it).
    public var clock: @Sendable () -> SigV4Time
    /// Where retries and refusals are logged.
    public var logger: Logger

    /// A configuration with Eddy's defaults: region `us-east-1`, virtual-host style, 30 s per attempt,
    /// ``RetryPolicy/init(maximumAttempts:baseDelay:maximumDelay:)``'s defaults, objects up to 1 GiB.
    public init(bucket: String, credentials: AWSCredentials, endpoint: String? = nil, region: String = "us-east-1") {
        self.bucket = bucket
        self.credentials = credentials
        self.endpoint = endpoint
        self.region = region
        self.pathStyle = false
        self.requestTimeout = .seconds(30)
        self.retry = RetryPolicy()
        self.maximumObjectBytes = 1 << 30
        self.clock = { SigV4Time.now() }
        self.logger = Logger(label: "eddy.s3")
    }
}

/// RetryPolicy is exponential backoff with full jitter (a wait drawn uniformly from zero to
/// `min(maximumDelay, baseDelay x 2^attempt)`), after AWS's "Exponential Backoff And Jitter".
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, the first included.
    public var maximumAttempts: Int
    /// The backoff's base.
    public var baseDelay: Duration
    /// The backoff's cap.
    public var maximumDelay: Duration

    /// Creates a policy: 6 attempts, 100 ms base, 5 s cap by default.
    public init(
        maximumAttempts: Int = 6, baseDelay: Duration = .milliseconds(100), maximumDelay: Duration = .seconds(5)
    ) {
        self.maximumAttempts = maximumAttempts
        self.baseDelay = baseDelay
        self.maximumDelay = maximumDelay
    }

    /// The wait before retry number `retry` (0 for the first retry): uniform in [0, min(cap, base x 2^retry)].
    public func delay(beforeRetry retry: Int) -> Duration {
        let base = Double(baseDelay.components.seconds) + Double(baseDelay.components.attoseconds) * 1e-18
        let cap = Double(maximumDelay.components.seconds) + Double(maximumDelay.components.attoseconds) * 1e-18
        let ceiling = min(cap, base * Double(1 << min(retry, 30)))
        return .nanoseconds(Int64(Double.random(in: 0...max(ceiling, 0)) * 1e9))
    }
}

/// S3ObjectStore is the ``ObjectStore`` of an S3 bucket, on AWS or any S3-compatible server (SeaweedFS, MinIO,
/// Ceph), over AsyncHTTPClient with AWS Signature V4.
///
/// - Integrity: every PUT carries `Content-Length`, `Content-MD5` (which the server verifies) and the SHA-256 of
///   the body, signed and kept as user metadata `x-amz-meta-eddy-sha256`; whole-object gets are checked
///   against it.
/// - Create-only puts send `If-None-Match: *`. A 412 means the key exists: the existing object's SHA-256 (or
///   MD5 entity tag) is compared with the body, and the same bytes count as success (an earlier attempt of the
///   same write). A 409 (a concurrent conditional write) is retried.
/// - Retries: 5xx, 429, `SlowDown`, timeouts and broken connections, with full-jitter backoff
///   (``RetryPolicy``). A 403 whose `Date` is more than five minutes from this machine's clock, or
///   `RequestTimeTooSkewed`, is ``ObjectStoreError/clockSkew(_:)`` and not retried.
/// - Bodies: a put sends its `ByteBuffer` as is (no copy); a get collects the answer into one buffer.
public final class S3ObjectStore: ObjectStore {
    /// The configuration this store was made with.
    public let configuration: S3Configuration
    let signer: SigV4Signer
    let scheme: String
    let host: String
    let port: Int?
    let client: HTTPClient
    let attemptCount = Atomic<Int>(0)
    let retryCount = Atomic<Int>(0)

    /// Requests sent, every attempt counted.
    public var attempts: Int { attemptCount.load(ordering: .relaxed) }
    /// Attempts that were retries of a failed one.
    public var retries: Int { retryCount.load(ordering: .relaxed) }

    public var capabilities: ObjectStoreCapabilities {
        ObjectStoreCapabilities(
            conditionalCreate: true, rangedReads: true, byteOrderListing: false, keysNestUnderObjects: true)
    }

    public var location: String { "s3://\(configuration.bucket) at \(scheme)://\(authority(bucketHost: false))" }

    /// Creates the store; no request is sent until the first call.
    /// - Throws: ``ObjectStoreError/configuration(_:)`` for an endpoint that is not `http(s)://host[:port]` or
    ///   an empty bucket name.
    public init(configuration: S3Configuration, client: HTTPClient = S3ObjectStore.defaultClient) throws {
        self.configuration = configuration
        self.client = client
        signer = SigV4Signer(credentials: configuration.credentials, region: configuration.region, service: "s3")
        guard !configuration.bucket.isEmpty, !configuration.bucket.contains("/") else {
            throw ObjectStoreError.configuration("bucket name '\(configuration.bucket)' is empty or has a '/'")
        }
        let endpoint = configuration.endpoint ?? "https://s3.\(configuration.region).amazonaws.com"
        guard let schemeEnd = endpoint.firstRange(of: "://") else {
            throw ObjectStoreError.configuration("endpoint '\(endpoint)' is not scheme://host[:port]")
        }
        scheme = String(endpoint[..<schemeEnd.lowerBound]).lowercased()
        guard scheme == "http" || scheme == "https" else {
            throw ObjectStoreError.configuration("endpoint '\(endpoint)': scheme must be http or https")
        }
        var authority = endpoint[schemeEnd.upperBound...]
        while authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.isEmpty, !authority.contains("/") else {
            throw ObjectStoreError.configuration("endpoint '\(endpoint)' must not have a path")
        }
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else {
                throw ObjectStoreError.configuration("endpoint '\(endpoint)' has a bad port")
            }
            host = String(authority[..<colon])
            port = number
        } else {
            host = String(authority)
            port = nil
        }
    }

    /// The HTTP client S3 stores share unless given one: AsyncHTTPClient's defaults but a 3 s connect timeout
    /// (AsyncHTTPClient retries a refused connection until then, so a dead endpoint fails an attempt in 3 s, not
    /// at the request timeout). Process-wide and never shut down, like `HTTPClient.shared`.
    public static let defaultClient: HTTPClient = makeClient(tls: nil)

    /// A client like ``defaultClient`` that verifies HTTPS servers against the authorities in the PEM file
    /// `authority` (`--s3-ca`) instead of the system's. One per file for the process, never shut down.
    /// - Throws: ``ObjectStoreError/configuration(_:)`` when the file is missing or not PEM certificates.
    public static func client(trusting authority: String) throws -> HTTPClient {
        try trustingClients.withLock { clients in
            if let known = clients[authority] { return known }
            let tls: TLSConfiguration
            do throws(EddyError) {
                tls = try ClientTLS(authority: authority).configuration()
            } catch {
                throw ObjectStoreError.configuration("--s3-ca: \(error.message)")
            }
            let made = makeClient(tls: tls)
            clients[authority] = made
            return made
        }
    }

    private static let trustingClients = Mutex<[String: HTTPClient]>([:])

    private static func makeClient(tls: TLSConfiguration?) -> HTTPClient {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.timeout.connect = .seconds(3)
        if let tls { configuration.tlsConfiguration = tls }
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    // MARK: - ObjectStore

    public func put(_ key: String, body: ByteBuffer, mode: PutMode) async throws -> PutOutcome {
        try ObjectKey.validate(key)
        let sha256 = body.withUnsafeReadableBytes { SigV4Signer.hex(SHA256.hash(data: $0)) }
        let md5 = body.withUnsafeReadableBytes { Array(Insecure.MD5.hash(data: $0)) }
        var headers: [(String, String)] = [
            ("Content-Length", String(body.readableBytes)),
            ("Content-MD5", Base64.encode(md5)),
            ("Content-Type", "application/octet-stream"),
            ("x-amz-meta-eddy-sha256", sha256),
        ]
        if mode == .createOnly { headers.append(("If-None-Match", "*")) }
        let response = try await send(
            "PUT", key: key, headers: headers, body: body, payloadHash: sha256, accept: [200, 412])
        if response.status == 200 { return .written }
        // 412: the key exists. The same bytes (an earlier attempt of this write) count as success.
        guard let existing = try await head(key) else {
            throw ObjectStoreError.server(status: 412, code: "PreconditionFailed", message: "but no object is there")
        }
        let same =
            existing.sha256.map { $0 == sha256 }
            ?? (existing.etag == SigV4Signer.hex(md5) && existing.size == Int64(body.readableBytes))
        if same { return .alreadyPresent }
        throw ObjectStoreError.alreadyExists(key)
    }

    public func get(_ key: String, range: Range<Int64>?) async throws -> ByteBuffer {
        try ObjectKey.validate(key)
        var headers: [(String, String)] = []
        if let range {
            if range.isEmpty {
                guard try await head(key) != nil else { throw ObjectStoreError.notFound(key) }
                return ByteBuffer()
            }
            headers.append(("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        }
        let response = try await send("GET", key: key, headers: headers, accept: [200, 206, 404, 416])
        switch response.status {
        case 404: throw ObjectStoreError.notFound(key)
        case 416: throw ObjectStoreError.invalidRange(key, try await head(key)?.size ?? 0)
        default: break
        }
        if range == nil, let expected = response.headers.first(name: "x-amz-meta-eddy-sha256") {
            let actual = response.body.withUnsafeReadableBytes { SigV4Signer.hex(SHA256.hash(data: $0)) }
            if actual != expected {
                throw ObjectStoreError.checksumMismatch(
                    "object '\(key)' read back with SHA-256 \(actual), stored \(expected)")
            }
        }
        return response.body
    }

    public func head(_ key: String) async throws -> ObjectInfo? {
        try ObjectKey.validate(key)
        let response = try await send("HEAD", key: key, accept: [200, 404])
        if response.status == 404 { return nil }
        let size = response.headers.first(name: "Content-Length").flatMap { Int64($0) } ?? 0
        let etag = response.headers.first(name: "ETag").map { $0.trimmingQuotes() }
        return ObjectInfo(
            key: key, size: size, sha256: response.headers.first(name: "x-amz-meta-eddy-sha256"), etag: etag)
    }

    public func list(prefix: String, startAfter: String?, continuation: String?, limit: Int) async throws
        -> ObjectListing
    {
        try ObjectKey.validatePrefix(prefix)
        guard (1...1000).contains(limit) else {
            throw ObjectStoreError.invalidKey(prefix, "list limit \(limit) is not in 1...1000")
        }
        var query = [("list-type", "2"), ("max-keys", String(limit))]
        if !prefix.isEmpty { query.append(("prefix", prefix)) }
        if let startAfter { query.append(("start-after", startAfter)) }
        if let continuation { query.append(("continuation-token", continuation)) }
        let response = try await send("GET", key: nil, query: query, accept: [200])
        let xml = Substring(String(buffer: response.body))
        var objects: [ObjectInfo] = []
        for entry in S3XML.elements("Contents", in: xml) {
            guard let key = S3XML.text("Key", in: entry) else { continue }
            objects.append(
                ObjectInfo(
                    key: key, size: S3XML.text("Size", in: entry).flatMap { Int64($0) } ?? 0,
                    etag: S3XML.text("ETag", in: entry)?.trimmingQuotes()))
        }
        let truncated = S3XML.text("IsTruncated", in: xml) == "true"
        let next = truncated ? (S3XML.text("NextContinuationToken", in: xml) ?? objects.last?.key) : nil
        return ObjectListing(objects: objects, continuation: next)
    }

    public func delete(_ key: String) async throws {
        try ObjectKey.validate(key)
        _ = try await send("DELETE", key: key, accept: [200, 204, 404])
    }

    /// Creates the bucket; one that exists and is ours counts as success.
    public func createBucket() async throws {
        let body: ByteBuffer
        if configuration.region == "us-east-1" {
            body = ByteBuffer()
        } else {
            body = ByteBuffer(
                string: "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    + "<LocationConstraint>\(configuration.region)</LocationConstraint></CreateBucketConfiguration>")
        }
        let hash = body.withUnsafeReadableBytes { SigV4Signer.hex(SHA256.hash(data: $0)) }
        let response = try await send(
            "PUT", key: nil, headers: [("Content-Length", String(body.readableBytes))], body: body, payloadHash: hash,
            accept: [200, 409])
        if response.status == 409 && response.code != "BucketAlreadyOwnedByYou" {
            throw ObjectStoreError.server(status: 409, code: response.code, message: response.message)
        }
    }

    // MARK: - Requests

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
        var code: String { S3XML.text("Code", in: Substring(String(buffer: body))) ?? "" }
        var message: String { S3XML.text("Message", in: Substring(String(buffer: body))) ?? "" }
    }

    func authority(bucketHost: Bool) -> String {
        let name = bucketHost ? "\(configuration.bucket).\(host)" : host
        return port.map { "\(name):\($0)" } ?? name
    }

    /// Sends one request with retries, and returns the first answer whose status is in `accept`.
    func send(
        _ method: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
        body: ByteBuffer? = nil, payloadHash: String = SigV4Signer.sha256Hex([UInt8]()), accept: Set<Int>
    ) async throws -> Answer {
        let virtualHost = !configuration.pathStyle
        var path = virtualHost ? "/" : "/" + configuration.bucket + (key == nil ? "" : "/")
        if let key { path += key }
        let hostHeader = authority(bucketHost: virtualHost)
        var attempt = 0
        while true {
            let time = configuration.clock()
            var signedHeaders = headers + [("Host", hostHeader), ("x-amz-content-sha256", payloadHash)]
            let signature = signer.signHeaders(
                method: method, path: path, query: query, headers: signedHeaders, payloadHash: payloadHash, time: time)
            signedHeaders += signature.headers
            let queryText = SigV4Signer.canonicalQuery(query)
            var request = HTTPClientRequest(
                url: "\(scheme)://\(hostHeader)\(SigV4Signer.uriEncode(path, keepSlash: true))"
                    + (queryText.isEmpty ? "" : "?" + queryText))
            request.method = HTTPMethod(rawValue: method)
            for (name, value) in signedHeaders { request.headers.add(name: name, value: value) }
            if let body { request.body = .bytes(body) }
            let failure: ObjectStoreError
            attemptCount.add(1, ordering: .relaxed)
            do {
                let answer = try await attemptOnce(request, method: method)
                if accept.contains(answer.status) { return answer }
                failure = classify(answer, time: time, what: "\(method) \(key ?? "/")")
            } catch {
                failure = error
            }
            attempt += 1
            guard failure.isRetriable, attempt < configuration.retry.maximumAttempts, !Task.isCancelled else {
                throw failure
            }
            let wait = configuration.retry.delay(beforeRetry: attempt - 1)
            configuration.logger.info(
                "retrying S3 request",
                metadata: [
                    "request": "\(method) \(key ?? "/")", "attempt": "\(attempt + 1)", "error": "\(failure)",
                    "wait": "\(wait)",
                ])
            try? await Task.sleep(for: wait)
            retryCount.add(1, ordering: .relaxed)
        }
    }

    /// One attempt, cut at the per-request timeout (without waiting for a request that ignores the
    /// cancellation: ``withAbandoningTimeout(_:_:)``); transport failures become ``ObjectStoreError``.
    func attemptOnce(_ request: HTTPClientRequest, method: String) async throws(ObjectStoreError) -> Answer {
        let timeout = configuration.requestTimeout
        let limit = configuration.maximumObjectBytes
        let client = client
        let outcome = await withAbandoningTimeout(timeout) { () -> Result<Answer, ObjectStoreError> in
            do {
                let response = try await client.execute(
                    request, timeout: .seconds(Int64(timeout.components.seconds) + 1))
                let body = try await response.body.collect(upTo: method == "HEAD" ? 0 : limit)
                return .success(Answer(status: Int(response.status.code), headers: response.headers, body: body))
            } catch let error as NIOTooManyBytesError {
                return .failure(.server(status: 200, code: "TooLarge", message: "answer over \(limit) bytes: \(error)"))
            } catch {
                if let rejected = TLSFailure.rejectedCertificate(error) {
                    return .failure(.untrustedServer("\(request.method.rawValue) \(request.url): \(rejected)"))
                }
                return .failure(.connection("\(request.method.rawValue) \(request.url): \(error)"))
            }
        }
        guard let outcome else {
            throw .timedOut("\(request.method.rawValue) \(request.url) took over \(timeout)")
        }
        return try outcome.get()
    }

    /// The error an unexpected answer means.
    func classify(_ answer: Answer, time: SigV4Time, what: String) -> ObjectStoreError {
        let code = answer.code
        let message = answer.message.isEmpty ? what : "\(what): \(answer.message)"
        if answer.status == 403 || answer.status == 400 {
            let serverTime = answer.headers.first(name: "Date").flatMap(HTTPDate.parse)
            let skew = serverTime.map { abs($0 - time.secondsSince1970) } ?? 0
            if code == "RequestTimeTooSkewed" || (answer.status == 403 && skew > 300) {
                return .clockSkew(
                    "\(what) was refused: this machine's clock is \(skew) s away from the server's "
                        + "(signed at \(time.amzDate)); fix the clock (NTP), retrying does not help")
            }
        }
        switch answer.status {
        case 403: return .accessDenied("\(code.isEmpty ? "HTTP 403" : code): \(message)")
        case 404: return .notFound(code == "NoSuchBucket" ? "bucket \(configuration.bucket)" : what)
        default: return .server(status: answer.status, code: code, message: message)
        }
    }
}

extension String {
    func trimmingQuotes() -> String {
        var text = Substring(self)
        if text.hasPrefix("\"") { text = text.dropFirst() }
        if text.hasSuffix("\"") { text = text.dropLast() }
        return String(text)
    }
}

/// Base64 (RFC 4648, with padding) for `Content-MD5`.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let b0 = UInt32(bytes[index])
            let b1 = index + 1 < bytes.count ? UInt32(bytes[index + 1]) : 0
            let b2 = index + 2 < bytes.count ? UInt32(bytes[index + 2]) : 0
            let triple = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            out.append(index + 1 < bytes.count ? alphabet[Int(triple >> 6 & 63)] : UInt8(ascii: "="))
            out.append(index + 2 < bytes.count ? alphabet[Int(triple & 63)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// HTTPDate parses the `Date` header's IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
enum HTTPDate {
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Seconds since 1970 of an IMF-fixdate, or nil when `text` is not one.
    static func parse(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, let day = Int32(parts[1]), let month = months.firstIndex(of: String(parts[2])),
            let year = Int32(parts[3])
        else { return nil }
        let clock = parts[4].split(separator: ":").compactMap { Int32($0) }
        guard clock.count == 3 else { return nil }
        var fields = tm()
        fields.tm_year = year - 1900
        fields.tm_mon = Int32(month)
        fields.tm_mday = day
        fields.tm_hour = clock[0]
        fields.tm_min = clock[1]
        fields.tm_sec = clock[2]
        return Int64(timegm(&fields))
    }
}
