/// ObjectStoreError is the one error type of ``ObjectStore`` backends: each case says what a caller can do
/// about it (``isRetriable``), and its description names the key and the server's own words.
public enum ObjectStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The key breaks the key rules (``ObjectKey``); the message says which.
    case invalidKey(String, String)
    /// No object under the key (or, for a bucket operation, no such bucket).
    case notFound(String)
    /// A create-only put found different bytes under the key.
    case alreadyExists(String)
    /// The range starts at or past the end of the object: key, object size.
    case invalidRange(String, Int64)
    /// The server refused the credentials or the signature (wrong secret, unknown key, no permission).
    case accessDenied(String)
    /// The request was refused because this machine's clock is off from the server's by more than the server
    /// allows (AWS: 15 minutes). Retrying does not help: fix the clock (NTP).
    case clockSkew(String)
    /// The server answered with an error: HTTP status, S3 error code (may be empty) and message.
    case server(status: Int, code: String, message: String)
    /// Bytes read back failed their checksum, or the server reported a checksum mismatch.
    case checksumMismatch(String)
    /// The request did not finish within the per-request timeout.
    case timedOut(String)
    /// The connection failed or broke.
    case connection(String)
    /// A local file operation failed: the operation, the path and errno's text.
    case io(String)
    /// The configuration is unusable (a bad URL, missing credentials).
    case configuration(String)
    /// The HTTPS server's certificate is not trusted (expired, another host's, or not signed by an authority the
    /// client trusts: `--s3-ca`). Not retried: it will not change by itself.
    case untrustedServer(String)

    /// Whether sending the same request again may work: throttling, 5xx, timeouts and broken connections.
    public var isRetriable: Bool {
        switch self {
        case .timedOut, .connection: true
        case .server(let status, let code, _):
            status >= 500 || status == 429 || status == 409 || code == "SlowDown"
        default: false
        }
    }

    public var description: String {
        switch self {
        case .invalidKey(let key, let why): "invalid object key '\(key)': \(why)"
        case .notFound(let key): "no object '\(key)'"
        case .alreadyExists(let key): "object '\(key)' exists with different bytes (create-only put refused)"
        case .invalidRange(let key, let size): "range past the end of object '\(key)' (\(size) bytes)"
        case .accessDenied(let message): "access denied: \(message)"
        case .clockSkew(let message): "clock skew: \(message)"
        case .server(let status, let code, let message):
            "object store answered HTTP \(status)\(code.isEmpty ? "" : " \(code)")\(message.isEmpty ? "" : ": \(message)")"
        case .checksumMismatch(let message): "checksum mismatch: \(message)"
        case .timedOut(let message): "timed out: \(message)"
        case .connection(let message): "connection failed: \(message)"
        case .io(let message): "I/O error: \(message)"
        case .configuration(let message): "object store configuration: \(message)"
        case .untrustedServer(let message): "TLS: \(message)"
        }
    }
}
