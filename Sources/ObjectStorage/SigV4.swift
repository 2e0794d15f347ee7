import Crypto

#if canImport(Glibc)
    import Glibc
#endif

/// AWSCredentials is an access key pair and, for temporary credentials, a session token.
public struct AWSCredentials: Sendable, Hashable {
    /// The access key ID (`AKIA...`).
    public var accessKeyID: String
    /// The secret access key.
    public var secretAccessKey: String
    /// The session token of temporary credentials, sent as `X-Amz-Security-Token`.
    public var sessionToken: String?

    /// Creates credentials.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// The credentials in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, or nil when
    /// the first two are not both set.
    public static func fromEnvironment(_ environment: [String: String]) -> AWSCredentials? {
        guard let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty,
            let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token)
    }
}

/// SigV4Time is a signing instant in the two forms SigV4 uses: `20150830T123600Z` and `20150830`.
public struct SigV4Time: Sendable, Hashable {
    /// Seconds since 1970-01-01 UTC.
    public let secondsSince1970: Int64
    /// `YYYYMMDDTHHMMSSZ` (the `X-Amz-Date` header).
    public let amzDate: String
    /// `YYYYMMDD` (the credential scope's date).
    public var dateStamp: String { String(amzDate.prefix(8)) }

    /// The instant `secondsSince1970` seconds after the epoch.
    public init(secondsSince1970: Int64) {
        self.secondsSince1970 = secondsSince1970
        var time = time_t(secondsSince1970)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        amzDate =
            "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    /// This machine's clock now.
    public static func now() -> SigV4Time {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return SigV4Time(secondsSince1970: Int64(spec.tv_sec))
    }
}

/// SigV4Signer signs HTTP requests with AWS Signature Version 4: in the `Authorization` header, in the query
/// string (presigned URLs), and the chunks of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` upload.
///
/// It follows the published algorithm: a canonical request (method, URI-encoded path, sorted encoded query,
/// lowercase sorted headers with trimmed values, signed header list, payload hash), a string to sign over its
/// SHA-256 and the credential scope, and an HMAC-SHA256 chain from the secret to a signing key. It is checked
/// against the AWS SigV4 test suite and S3's published examples (`Tests/ObjectStorageTests/SigV4Tests.swift`).
///
/// Paths and query items are given decoded (`/my key`, `prefix` = `a/b`); the signer encodes them as the
/// canonical form needs and the request must carry the same encoding (``uriEncode(_:keepSlash:)``).
public struct SigV4Signer: Sendable {
    /// The credentials that sign.
    public var credentials: AWSCredentials
    /// The region of the credential scope (`us-east-1`).
    public var region: String
    /// The service of the credential scope (`s3`).
    public var service: String
    /// Whether the canonical path drops `.` and `..` segments and repeated slashes. S3 does not (false).
    public var normalizesPath: Bool

    /// The `X-Amz-Content-SHA256` value of a body that is not hashed (presigned S3 URLs and some uploads).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// The payload hash of a chunk-signed streaming upload.
    public static let streamingPayload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    static let algorithm = "AWS4-HMAC-SHA256"

    /// Creates a signer.
    public init(credentials: AWSCredentials, region: String, service: String, normalizesPath: Bool = false) {
        self.credentials = credentials
        self.region = region
        self.service = service
        self.normalizesPath = normalizesPath
    }

    /// Every intermediate of one signature, so tests can compare each with the published vectors.
    public struct Signature: Sendable, Hashable {
        /// The canonical request.
        public var canonicalRequest: String
        /// The string to sign.
        public var stringToSign: String
        /// The signature, lowercase hex.
        public var signature: String
        /// The `;`-joined lowercase names of the signed headers.
        public var signedHeaders: String
        /// Headers to add to the request: `X-Amz-Date`, `X-Amz-Security-Token` and `Authorization` for header
        /// signing; none for query signing.
        public var headers: [(String, String)]
        /// Query items to add (decoded): the `X-Amz-*` items of a presigned request; none for header signing.
        public var query: [(String, String)]

        public static func == (a: Signature, b: Signature) -> Bool {
            a.canonicalRequest == b.canonicalRequest && a.signature == b.signature
        }

        public func hash(into hasher: inout Hasher) { hasher.combine(signature) }
    }

    /// Signs a request in its `Authorization` header.
    /// - Parameters:
    ///   - method: `GET`, `PUT`, ...
    ///   - path: the decoded path (`/bucket/my key`).
    ///   - query: decoded query items.
    ///   - headers: the headers to sign, `Host` among them (`X-Amz-Date` and the session token are added).
    ///   - payloadHash: lowercase hex SHA-256 of the body, ``unsignedPayload`` or ``streamingPayload``.
    ///   - time: the signing instant.
    ///   - signsSessionToken: whether the session token is part of what is signed (it always is sent).
    /// - Returns: the signature and the headers to add.
    public func signHeaders(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String,
        time: SigV4Time, signsSessionToken: Bool = true
    ) -> Signature {
        var signedInput = headers
        signedInput.append(("X-Amz-Date", time.amzDate))
        var added = [("X-Amz-Date", time.amzDate)]
        if let token = credentials.sessionToken {
            if signsSessionToken { signedInput.append(("X-Amz-Security-Token", token)) }
            added.append(("X-Amz-Security-Token", token))
        }
        var result = sign(
            method: method, path: path, query: query, headers: signedInput, payloadHash: payloadHash, time: time)
        added.append(
            (
                "Authorization",
                "\(Self.algorithm) Credential=\(credentials.accessKeyID)/\(scope(time)), "
                    + "SignedHeaders=\(result.signedHeaders), Signature=\(result.signature)"
            ))
        result.headers = added
        return result
    }

    /// Signs a request in its query string (a presigned URL valid for `expires` seconds).
    /// - Parameters: as ``signHeaders(method:path:query:headers:payloadHash:time:signsSessionToken:)``, and
    ///   `expires`, the validity in seconds.
    /// - Returns: the signature and the query items to add (`X-Amz-Signature` last).
    public func presign(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], expires: Int,
        payloadHash: String, time: SigV4Time, signsSessionToken: Bool = true
    ) -> Signature {
        let signedNames = Self.canonicalHeaders(headers).names
        var added: [(String, String)] = [
            ("X-Amz-Algorithm", Self.algorithm),
            ("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope(time))"),
            ("X-Amz-Date", time.amzDate),
            ("X-Amz-SignedHeaders", signedNames),
            ("X-Amz-Expires", String(expires)),
        ]
        if let token = credentials.sessionToken, signsSessionToken { added.append(("X-Amz-Security-Token", token)) }
        var result = sign(
            method: method, path: path, query: query + added, headers: headers, payloadHash: payloadHash, time: time)
        if let token = credentials.sessionToken, !signsSessionToken { added.append(("X-Amz-Security-Token", token)) }
        added.append(("X-Amz-Signature", result.signature))
        result.query = added
        return result
    }

    /// The signature of one chunk of a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` upload.
    /// - Parameters:
    ///   - previous: the signature before (the request's seed signature for the first chunk).
    ///   - chunk: the chunk's bytes (empty for the final chunk).
    ///   - time: the request's signing instant.
    /// - Returns: the string to sign and the signature.
    public func chunkSignature(previous: String, chunk: some Sequence<UInt8>, time: SigV4Time) -> (
        stringToSign: String, signature: String
    ) {
        let stringToSign = [
            "AWS4-HMAC-SHA256-PAYLOAD", time.amzDate, scope(time), previous, Self.sha256Hex([UInt8]()),
            Self.sha256Hex(Array(chunk)),
        ].joined(separator: "\n")
        return (
            stringToSign, Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key(time)))
        )
    }

    func sign(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String,
        time: SigV4Time
    ) -> Signature {
        let canonicalHeaders = Self.canonicalHeaders(headers)
        let canonicalRequest = [
            method, Self.canonicalPath(path, normalize: normalizesPath), Self.canonicalQuery(query),
            canonicalHeaders.block, canonicalHeaders.names, payloadHash,
        ].joined(separator: "\n")
        let stringToSign = [
            Self.algorithm, time.amzDate, scope(time), Self.sha256Hex(Array(canonicalRequest.utf8)),
        ].joined(separator: "\n")
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key(time)))
        return Signature(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature,
            signedHeaders: canonicalHeaders.names, headers: [], query: [])
    }

    func scope(_ time: SigV4Time) -> String { "\(time.dateStamp)/\(region)/\(service)/aws4_request" }

    /// The signing key: HMAC chain over the date, region, service and `aws4_request`.
    func key(_ time: SigV4Time) -> SymmetricKey {
        var key = SymmetricKey(data: Array(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [time.dateStamp, region, service, "aws4_request"] {
            key = SymmetricKey(data: HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key))
        }
        return key
    }

    // MARK: - Canonical forms

    /// The canonical URI: each segment URI-encoded once, `/` kept; with `normalize`, `.`/`..` segments and
    /// repeated slashes removed (a trailing slash stays).
    public static func canonicalPath(_ path: String, normalize: Bool) -> String {
        var path = path.isEmpty ? "/" : path
        if normalize {
            var segments: [Substring] = []
            for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
                if segment == "." { continue }
                if segment == ".." {
                    if !segments.isEmpty { segments.removeLast() }
                    continue
                }
                segments.append(segment)
            }
            let trailing = path.hasSuffix("/") && !segments.isEmpty
            path = "/" + segments.joined(separator: "/") + (trailing ? "/" : "")
        }
        return uriEncode(path, keepSlash: true)
    }

    /// The canonical query: items encoded, sorted by key then value, joined with `&`.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (uriEncode($0.0, keepSlash: false), uriEncode($0.1, keepSlash: false)) }
            .sorted { $0.0 != $1.0 ? Array($0.0.utf8).lexicographicallyPrecedes($1.0.utf8) : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// The canonical header block (`name:value\n` per header, sorted, duplicates joined with `,`) and the
    /// signed-header list.
    static func canonicalHeaders(_ headers: [(String, String)]) -> (block: String, names: String) {
        var merged: [String: [String]] = [:]
        var order: [String] = []
        for (name, value) in headers {
            let lower = name.lowercased()
            if merged[lower] == nil { order.append(lower) }
            merged[lower, default: []].append(trimValue(value))
        }
        order.sort { Array($0.utf8).lexicographicallyPrecedes($1.utf8) }
        let block = order.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        return (block, order.joined(separator: ";"))
    }

    /// A header value with leading and trailing whitespace removed and inner runs of whitespace made one space.
    static func trimValue(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }).joined(separator: " ")
    }

    /// Percent-encodes everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), and `/` when
    /// `keepSlash`; UTF-8 bytes are encoded one by one in uppercase hex.
    public static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash: out.append("/")
            default:
                let digits = Array("0123456789ABCDEF".utf8)
                out.append("%")
                out.unicodeScalars.append(Unicode.Scalar(digits[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(digits[Int(byte & 15)]))
            }
        }
        return out
    }

    /// Lowercase hex SHA-256 of `bytes`.
    public static func sha256Hex(_ bytes: some Sequence<UInt8>) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        return hex(hasher.finalize())
    }

    /// Lowercase hex of a digest or any bytes.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
