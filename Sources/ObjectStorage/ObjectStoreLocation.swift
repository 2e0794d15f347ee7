/// ObjectStoreLocation is where objects go, as a user writes it: `file://DIR` or `s3://BUCKET/PREFIX`, with the
/// S3 settings beside it. It makes the store and gives the key prefix.
public struct ObjectStoreLocation: Sendable, Hashable, CustomStringConvertible {
    /// The backend and its address.
    public enum Backend: Sendable, Hashable {
        /// A folder.
        case file(String)
        /// A bucket.
        case s3(bucket: String)
    }

    /// The backend.
    public var backend: Backend
    /// The key prefix (the `PREFIX` of `s3://BUCKET/PREFIX`; empty for `file://`).
    public var prefix: String
    /// The S3 endpoint (`http://127.0.0.1:8333`); AWS when nil.
    public var endpoint: String?
    /// The S3 region.
    public var region: String
    /// Path-style S3 addressing.
    public var pathStyle: Bool
    /// The time limit of one S3 attempt (`--s3-timeout`); the S3 default (30 s) when nil.
    public var requestTimeout: Duration?
    /// A PEM file of the authorities an HTTPS endpoint's certificate is checked against (`--s3-ca`, else
    /// `AWS_CA_BUNDLE`); the system's when nil.
    public var authority: String?

    /// Parses a location.
    /// - Parameters:
    ///   - url: `file://DIR` (an absolute or relative folder) or `s3://BUCKET[/PREFIX]`.
    ///   - endpoint: `--s3-endpoint`.
    ///   - region: `--s3-region` (else `AWS_REGION`, `AWS_DEFAULT_REGION`, `us-east-1`).
    ///   - pathStyle: `--s3-path-style`.
    ///   - environment: the process environment.
    /// - Throws: ``ObjectStoreError/configuration(_:)`` naming what is wrong.
    public init(
        parsing url: String, endpoint: String? = nil, region: String? = nil, pathStyle: Bool = false,
        environment: [String: String] = [:]
    ) throws {
        self.endpoint = endpoint ?? environment["AWS_ENDPOINT_URL_S3"] ?? environment["AWS_ENDPOINT_URL"]
        self.region = region ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        self.pathStyle = pathStyle
        authority = environment["AWS_CA_BUNDLE"].flatMap { $0.isEmpty ? nil : $0 }
        if url.hasPrefix("file://") {
            let folder = String(url.dropFirst("file://".count))
            guard !folder.isEmpty else { throw ObjectStoreError.configuration("'\(url)' names no folder") }
            backend = .file(folder)
            prefix = ""
        } else if url.hasPrefix("s3://") {
            let rest = url.dropFirst("s3://".count)
            let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let bucket = String(parts[0])
            guard !bucket.isEmpty else { throw ObjectStoreError.configuration("'\(url)' names no bucket") }
            backend = .s3(bucket: bucket)
            var path = parts.count > 1 ? String(parts[1]) : ""
            while path.hasSuffix("/") { path.removeLast() }
            if !path.isEmpty { try ObjectKey.validate(path) }
            prefix = path
        } else {
            throw ObjectStoreError.configuration(
                "'\(url)' is not an object store location: use file://DIR or s3://BUCKET/PREFIX")
        }
    }

    /// Makes the store. S3 credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) unless given.
    /// - Throws: ``ObjectStoreError/configuration(_:)`` when S3 credentials are missing; the file backend's
    ///   errors when its folder cannot be made.
    public func makeStore(environment: [String: String], credentials: AWSCredentials? = nil) throws -> any ObjectStore {
        switch backend {
        case .file(let folder):
            return try FileObjectStore(root: folder)
        case .s3(let bucket):
            guard let credentials = credentials ?? AWSCredentials.fromEnvironment(environment) else {
                throw ObjectStoreError.configuration(
                    "s3://\(bucket) needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            var configuration = S3Configuration(
                bucket: bucket, credentials: credentials, endpoint: endpoint, region: region)
            configuration.pathStyle = pathStyle
            if let requestTimeout { configuration.requestTimeout = requestTimeout }
            return try S3ObjectStore(
                configuration: configuration,
                client: try authority.map { try S3ObjectStore.client(trusting: $0) } ?? S3ObjectStore.defaultClient)
        }
    }

    public var description: String {
        switch backend {
        case .file(let folder): "file://\(folder)"
        case .s3(let bucket): "s3://\(bucket)" + (prefix.isEmpty ? "" : "/\(prefix)")
        }
    }
}
