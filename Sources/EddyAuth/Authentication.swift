import Crypto
import Foundation
import StreamModel
import Synchronization

/// Checks a bearer token and says whose it is.
public protocol Authenticator: Sendable {
    /// The principal `token` belongs to.
    /// - Throws: ``EddyError/Code/unauthorized`` when the token is not valid (unknown, expired, badly signed).
    func principal(for token: String) async throws(EddyError) -> Principal
}

/// How a server authenticates its clients: `--auth off|tokens:FILE|jwt:KEYFILE|k8s:FILE`.
public enum AuthSetting: Sendable, Equatable, CustomStringConvertible {
    /// No authentication: every connection is ``Principal/unrestricted`` (the embedded default; servers say so
    /// loudly in their log).
    case off
    /// Bearer tokens listed in a JSON file (``TokensFile``).
    case tokens(path: String)
    /// Signed JWTs, checked with the keys of a JSON key file.
    case jwt(path: String)
    /// Kubernetes service-account tokens, checked with the cluster's keys (``KubernetesAuthenticator``).
    case kubernetes(path: String)

    /// Parses `off`, `tokens:FILE`, `jwt:KEYFILE` or `k8s:FILE`.
    /// - Throws: ``EddyError/Code/invalidArgument`` for anything else.
    public init(parsing text: String) throws(EddyError) {
        if text == "off" {
            self = .off
        } else if text.hasPrefix("tokens:"), text.count > 7 {
            self = .tokens(path: String(text.dropFirst(7)))
        } else if text.hasPrefix("jwt:"), text.count > 4 {
            self = .jwt(path: String(text.dropFirst(4)))
        } else if text.hasPrefix("k8s:"), text.count > 4 {
            self = .kubernetes(path: String(text.dropFirst(4)))
        } else {
            throw EddyError(.invalidArgument, "--auth '\(text)' is not off, tokens:FILE, jwt:KEYFILE or k8s:FILE")
        }
    }

    public var description: String {
        switch self {
        case .off: "off"
        case .tokens(let path): "tokens:" + path
        case .jwt(let path): "jwt:" + path
        case .kubernetes(let path): "k8s:" + path
        }
    }
}

/// Who may connect to a server and what each principal may do: the server's ``AuthSetting`` loaded.
public struct AccessControl: Sendable {
    /// The setting it was loaded from.
    public let setting: AuthSetting
    let authenticator: (any Authenticator)?

    /// Authentication off: every connection may do everything.
    public static let off = AccessControl(setting: .off, authenticator: nil)

    /// Loads `setting` (reads its file).
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the file and what is wrong with it.
    public static func load(_ setting: AuthSetting) async throws(EddyError) -> AccessControl {
        guard let loaded = try await loadAuthenticator(setting) else { return .off }
        return AccessControl(setting: setting, authenticator: Reloadable(loaded))
    }

    private static func loadAuthenticator(_ setting: AuthSetting) async throws(EddyError) -> (any Authenticator)? {
        switch setting {
        case .off: nil
        case .tokens(let path): try TokensFile(path: path)
        case .jwt(let path): try await JWTAuthenticator.load(path: path)
        case .kubernetes(let path): try await KubernetesAuthenticator.load(path: path)
        }
    }

    /// Reads the setting's file again (SIGHUP): connections authenticated from now on are checked against it
    /// (a removed token is refused); connections already authenticated keep their principal. On error the old
    /// file stays in use.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the file and what is wrong with it.
    public func reload() async throws(EddyError) {
        guard let reloadable = authenticator as? Reloadable, let fresh = try await Self.loadAuthenticator(setting)
        else { return }
        reloadable.current.withLock { $0 = fresh }
    }

    /// An authenticator ``reload()`` can replace.
    final class Reloadable: Authenticator {
        let current: Mutex<any Authenticator>

        init(_ authenticator: any Authenticator) { current = Mutex(authenticator) }

        func principal(for token: String) async throws(EddyError) -> Principal {
            try await current.withLock { $0 }.principal(for: token)
        }
    }

    /// An access control with its own authenticator (tests).
    public init(setting: AuthSetting, authenticator: (any Authenticator)?) {
        self.setting = setting
        self.authenticator = authenticator
    }

    /// Whether tokens are checked.
    public var enabled: Bool { authenticator != nil }

    /// The principal of a connection whose hello carried `token` (empty: none).
    /// - Throws: ``EddyError/Code/unauthorized`` when authentication is on and the token is missing or not valid.
    public func principal(for token: String) async throws(EddyError) -> Principal {
        guard let authenticator else { return .unrestricted }
        guard !token.isEmpty else {
            throw EddyError(.unauthorized, "this server requires a token (--token or EDDY_TOKEN)")
        }
        return try await authenticator.principal(for: token)
    }
}

/// The tokens file of `--auth tokens:FILE`: bearer tokens, each with its principal and grants.
///
/// ```json
/// {"tokens": [{"token": "...", "principal": "alice",
///              "grants": [{"scope": "tenant-a/*", "roles": ["read", "write"]}]}]}
/// ```
///
/// Tokens are kept as SHA-256 digests and looked up by digest, so the comparison of a presented token does not
/// depend on how much of it matches a real one.
public struct TokensFile: Authenticator {
    struct Document: Decodable {
        struct Entry: Codable {
            var token: String
            var principal: String
            var grants: [Grant]
        }
        var tokens: [Entry]
    }

    let principals: [Data: Principal]

    /// Reads and checks the file at `path`.
    /// - Throws: ``EddyError/Code/invalidArgument`` when it cannot be read, is not such a document, or repeats a
    ///   token or has an empty one.
    public init(path: String) throws(EddyError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.invalidArgument, "cannot read the tokens file \(path): \(error.localizedDescription)")
        }
        try self.init(json: data, source: path)
    }

    /// Parses a tokens document; `source` names it in errors.
    public init(json: Data, source: String) throws(EddyError) {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: json)
        } catch {
            throw EddyError(.invalidArgument, "the tokens file \(source) is not valid: \(Self.describe(error))")
        }
        var principals: [Data: Principal] = [:]
        for (i, entry) in document.tokens.enumerated() {
            guard !entry.token.isEmpty else {
                throw EddyError(.invalidArgument, "the tokens file \(source): token \(i + 1) is empty")
            }
            guard !entry.principal.isEmpty else {
                throw EddyError(.invalidArgument, "the tokens file \(source): token \(i + 1) has no principal")
            }
            let digest = Self.digest(entry.token)
            guard principals[digest] == nil else {
                throw EddyError(.invalidArgument, "the tokens file \(source): token \(i + 1) repeats an earlier one")
            }
            principals[digest] = Principal(name: entry.principal, grants: entry.grants)
        }
        self.principals = principals
    }

    public func principal(for token: String) throws(EddyError) -> Principal {
        guard let principal = principals[Self.digest(token)] else {
            throw EddyError(.unauthorized, "the token is not valid")
        }
        return principal
    }

    static func digest(_ token: String) -> Data { Data(SHA256.hash(data: Data(token.utf8))) }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            "missing \"\(key.stringValue)\"" + Self.at(context.codingPath)
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            context.debugDescription + Self.at(context.codingPath)
        case DecodingError.dataCorrupted(let context):
            context.debugDescription + Self.at(context.codingPath)
        default: "\(error)"
        }
    }

    static func at(_ path: [any CodingKey]) -> String {
        path.isEmpty ? "" : " at " + path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}
