import Foundation
import JWTKit
import StreamModel
import Yams

/// The authenticator of `--auth k8s:FILE`: Kubernetes projected service-account tokens, taken at the cluster's
/// word. A pod mounts a token whose audience is Eddy's and sends it as its bearer token; the principal is the
/// token's `sub`, `system:serviceaccount:NAMESPACE:NAME`.
///
/// FILE (JSON or YAML):
///
/// ```yaml
/// issuer: https://kubernetes.default.svc.cluster.local   # the cluster's service-account issuer
/// audience: eddy                                          # the audience the pods' projected tokens ask for
/// jwks_file: cluster-jwks.json    # what the cluster publishes at /openid/v1/jwks (relative to FILE), or
/// # jwks: {"keys": [...]}         # the same inline
/// grants:
///   default:                      # every service account, {namespace} being the token's namespace
///     - {scope: "{namespace}/*", roles: [read, write]}
///   accounts:                     # named accounts get these instead of the default
///     "system:serviceaccount:ops:backup": [{scope: "*", roles: [read]}]
/// tokens:                         # optional: static tokens of identities outside the pods, as in a tokens
///   - {token: "...", principal: eddy-node, grants: [{scope: "*", roles: [admin]}]}   # file (the nodes' own)
/// ```
///
/// A token is refused (``EddyError/Code/unauthorized``) when its signature is not by a key of the set (RS256 or
/// ES256, by `kid`), its `iss` or `aud` is not the file's, it has expired or is not valid yet (`exp`, `nbf`),
/// its `sub` is not a service account's, or its `kubernetes.io` claim names another namespace or account than its
/// `sub`.
public struct KubernetesAuthenticator: Authenticator {
    struct File: Decodable {
        struct Grants: Decodable {
            var `default`: [Grant]?
            var accounts: [String: [Grant]]?
        }
        var issuer: String
        var audience: String
        var jwks: JWKS?
        var jwksFile: String?
        var grants: Grants?
        var tokens: [TokensFile.Document.Entry]?

        enum CodingKeys: String, CodingKey {
            case issuer, audience, jwks, grants, tokens
            case jwksFile = "jwks_file"
        }
    }

    /// The claims of a projected service-account token.
    struct Claims: JWTPayload {
        struct Kubernetes: Codable {
            struct Account: Codable {
                var name: String
                var uid: String?
            }
            struct Pod: Codable {
                var name: String
                var uid: String?
            }
            var namespace: String
            var serviceaccount: Account?
            var pod: Pod?
        }
        var iss: IssuerClaim
        var aud: AudienceClaim
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iat: IssuedAtClaim?
        var kubernetes: Kubernetes?

        enum CodingKeys: String, CodingKey {
            case iss, aud, sub, exp, nbf, iat
            case kubernetes = "kubernetes.io"
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
            try nbf?.verifyNotBefore()
        }
    }

    let keys: [String: VerificationKey]
    let issuer: String
    let audience: String
    /// Grants of every account without its own, `{namespace}` still in their scopes.
    let defaultGrants: [Grant]
    let accounts: [String: [Grant]]
    /// The file's static tokens (`tokens`), checked before a token is taken for a service account's.
    let staticTokens: TokensFile?

    /// The largest `jwks_file` read (a cluster's key set is a few KiB).
    static let maxKeySetBytes = 1 << 20

    /// Reads FILE (and the key set it names).
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the file and what is wrong with it.
    public static func load(path: String) async throws(EddyError) -> KubernetesAuthenticator {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw EddyError(
                .invalidArgument, "cannot read the Kubernetes auth file \(path): \(error.localizedDescription)")
        }
        return try await load(text: text, source: path, folder: (path as NSString).deletingLastPathComponent)
    }

    /// Parses a file's text; `source` names it in errors, `folder` is where a relative `jwks_file` is.
    public static func load(text: String, source: String, folder: String) async throws(EddyError)
        -> KubernetesAuthenticator
    {
        let file: File
        var staticTokens: TokensFile?
        do {
            // YAML is a superset of JSON: one parser for both, then the document as JSON for the decoder.
            guard let root = try Yams.compose(yaml: text), let document = try Self.plain(root) as? [String: Any],
                JSONSerialization.isValidJSONObject(document)
            else {
                throw EddyError(.invalidArgument, "it is not a mapping")
            }
            let json = try JSONSerialization.data(withJSONObject: document)
            file = try JSONDecoder().decode(File.self, from: json)
            if let tokens = document["tokens"] {
                staticTokens = try TokensFile(
                    json: try JSONSerialization.data(withJSONObject: ["tokens": tokens]), source: "\(source) (tokens)")
            }
        } catch let error as EddyError {
            throw EddyError(.invalidArgument, "the Kubernetes auth file \(source) is not valid: \(error.message)")
        } catch {
            throw EddyError(
                .invalidArgument, "the Kubernetes auth file \(source) is not valid: \(TokensFile.describe(error))")
        }
        guard !file.issuer.isEmpty, !file.audience.isEmpty else {
            throw EddyError(.invalidArgument, "the Kubernetes auth file \(source) needs an issuer and an audience")
        }
        let jwks: JWKS
        switch (file.jwks, file.jwksFile) {
        case (let inline?, nil):
            jwks = inline
        case (nil, let name?):
            let path = name.hasPrefix("/") ? name : folder + "/" + name
            // A key set is a small regular file: a device, a pipe or a huge file is refused rather than read.
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            if let attributes,
                attributes[.type] as? FileAttributeType != .typeRegular
                    || (attributes[.size] as? Int ?? 0) > Self.maxKeySetBytes
            {
                throw EddyError(
                    .invalidArgument,
                    "the key set \(path) of \(source) is not a regular file of at most \(Self.maxKeySetBytes) bytes")
            }
            do {
                jwks = try JSONDecoder().decode(JWKS.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                throw EddyError(
                    .invalidArgument,
                    "the key set \(path) of \(source) is not a readable JWKS: \(TokensFile.describe(error))")
            }
        default:
            throw EddyError(
                .invalidArgument, "the Kubernetes auth file \(source) needs jwks or jwks_file (one of them)")
        }
        let keys = try await VerificationKey.keys(of: jwks, source: source)
        let defaults = file.grants?.default ?? []
        let accounts = file.grants?.accounts ?? [:]
        for name in accounts.keys where Self.account(name) == nil {
            throw EddyError(
                .invalidArgument,
                "the Kubernetes auth file \(source): account '\(name)' is not system:serviceaccount:NAMESPACE:NAME")
        }
        return KubernetesAuthenticator(
            keys: keys, issuer: file.issuer, audience: file.audience, defaultGrants: defaults, accounts: accounts,
            staticTokens: staticTokens)
    }

    /// A YAML node as plain values (dictionaries with string keys, arrays, scalars as YAML types them). Yams's
    /// own `load` traps on a mapping key that is not a scalar (`{[a]: b}`); here it is refused.
    static func plain(_ node: Node) throws(EddyError) -> Any {
        switch node {
        case .scalar:
            return Constructor.default.any(from: node)
        case .mapping(let mapping):
            var out: [String: Any] = [:]
            for (key, value) in mapping {
                guard case .scalar(let name) = key else {
                    throw EddyError(
                        .invalidArgument, "a mapping key is not a plain string (line \(key.mark?.line ?? 0))")
                }
                out[name.string] = try plain(value)
            }
            return out
        case .sequence(let sequence):
            return try sequence.map { (item) throws(EddyError) in try plain(item) }
        case .alias:
            throw EddyError(.invalidArgument, "YAML aliases are not taken")
        }
    }

    /// The namespace and name of `system:serviceaccount:NAMESPACE:NAME`, or nil.
    static func account(_ subject: String) -> (namespace: String, name: String)? {
        let parts = subject.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "system", parts[1] == "serviceaccount", !parts[2].isEmpty, !parts[3].isEmpty
        else { return nil }
        return (String(parts[2]), String(parts[3]))
    }

    public func principal(for token: String) async throws(EddyError) -> Principal {
        if let staticTokens, let principal = try? staticTokens.principal(for: token) { return principal }
        let claims = try await VerificationKey.verify(token, keys: keys, as: Claims.self)
        guard claims.iss.value == issuer else { throw EddyError(.unauthorized, "the token's issuer is not \(issuer)") }
        guard claims.aud.value.contains(audience) else {
            throw EddyError(.unauthorized, "the token is not meant for \(audience) (aud)")
        }
        guard let (namespace, name) = Self.account(claims.sub.value) else {
            throw EddyError(.unauthorized, "the token is not a service account's (sub system:serviceaccount:NS:NAME)")
        }
        guard let kubernetes = claims.kubernetes, kubernetes.namespace == namespace,
            kubernetes.serviceaccount.map({ $0.name == name }) ?? true
        else {
            throw EddyError(.unauthorized, "the token's kubernetes.io claim does not name the account of its sub")
        }
        let grants =
            accounts[claims.sub.value]
            ?? defaultGrants.map {
                Grant(scope: $0.scope.replacingOccurrences(of: "{namespace}", with: namespace), roles: $0.roles)
            }
        return Principal(name: claims.sub.value, grants: grants)
    }
}
