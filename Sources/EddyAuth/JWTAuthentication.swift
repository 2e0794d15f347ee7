import Foundation
import JWTKit
import StreamModel

/// The authenticator of `--auth jwt:KEYFILE`: signed JWTs (HS256 or ES256, through jwt-kit), checked with the
/// keys of a JSON key file.
///
/// ```json
/// {"issuer": "https://idp.example", "audience": "eddy",
///  "keys": [{"kid": "k1", "alg": "HS256", "secret": "..."},
///           {"kid": "k2", "alg": "ES256", "public_key": "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----"}]}
/// ```
///
/// A token names its key (`kid` in its header) and the key's algorithm (`alg`, which must be the key's: a token
/// cannot choose how it is checked). Its claims: `sub` (the principal), `exp` (required), `nbf` (optional),
/// `iss` and `aud` (required to match when the key file sets `issuer` or `audience`), and `grants`, a list of
/// `{"scope", "roles"}` as in a tokens file.
public struct JWTAuthenticator: Authenticator {
    struct KeyFile: Decodable {
        struct Key: Decodable {
            var kid: String
            var alg: String
            var secret: String?
            var publicKey: String?

            enum CodingKeys: String, CodingKey {
                case kid, alg, secret
                case publicKey = "public_key"
            }
        }
        var issuer: String?
        var audience: String?
        var keys: [Key]
    }

    struct Header: Decodable {
        var alg: String?
        var kid: String?
    }

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var grants: [Grant]

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
            try nbf?.verifyNotBefore()
        }
    }

    /// Each key alone in a collection of its own, so a token is checked with the key it names or not at all (a
    /// collection would fall back to its default key for an unknown `kid`).
    let keys: [String: VerificationKey]
    let issuer: String?
    let audience: String?

    /// Reads the key file at `path`.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the file and what is wrong (unreadable, not such a
    ///   document, an algorithm other than HS256 and ES256, a key missing its secret or public key, a bad PEM).
    public static func load(path: String) async throws(EddyError) -> JWTAuthenticator {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.invalidArgument, "cannot read the JWT key file \(path): \(error.localizedDescription)")
        }
        return try await load(json: data, source: path)
    }

    /// Parses a key file; `source` names it in errors.
    public static func load(json: Data, source: String) async throws(EddyError) -> JWTAuthenticator {
        let file: KeyFile
        do {
            file = try JSONDecoder().decode(KeyFile.self, from: json)
        } catch {
            throw EddyError(.invalidArgument, "the JWT key file \(source) is not valid: \(TokensFile.describe(error))")
        }
        guard !file.keys.isEmpty else { throw EddyError(.invalidArgument, "the JWT key file \(source) has no keys") }
        var keys: [String: VerificationKey] = [:]
        for key in file.keys {
            guard keys[key.kid] == nil else {
                throw EddyError(.invalidArgument, "the JWT key file \(source): kid '\(key.kid)' repeats")
            }
            let collection = JWTKeyCollection()
            switch key.alg {
            case "HS256":
                guard let secret = key.secret, secret.utf8.count >= 32 else {
                    throw EddyError(
                        .invalidArgument,
                        "the JWT key file \(source): HS256 key '\(key.kid)' needs a secret of at least 32 bytes")
                }
                await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            case "ES256":
                guard let pem = key.publicKey else {
                    throw EddyError(
                        .invalidArgument, "the JWT key file \(source): ES256 key '\(key.kid)' needs a public_key (PEM)")
                }
                do {
                    await collection.add(ecdsa: try ES256PublicKey(pem: pem))
                } catch {
                    throw EddyError(
                        .invalidArgument,
                        "the JWT key file \(source): key '\(key.kid)' is not a P-256 public key: \(error)")
                }
            default:
                throw EddyError(
                    .invalidArgument,
                    "the JWT key file \(source): key '\(key.kid)' has algorithm '\(key.alg)'; use HS256 or ES256")
            }
            keys[key.kid] = VerificationKey(alg: key.alg, collection: collection)
        }
        return JWTAuthenticator(keys: keys, issuer: file.issuer, audience: file.audience)
    }

    public func principal(for token: String) async throws(EddyError) -> Principal {
        let claims = try await VerificationKey.verify(token, keys: keys, as: Claims.self)
        if let issuer, claims.iss?.value != issuer {
            throw EddyError(.unauthorized, "the token's issuer is not \(issuer)")
        }
        if let audience, !(claims.aud?.value.contains(audience) ?? false) {
            throw EddyError(.unauthorized, "the token is not meant for \(audience) (aud)")
        }
        guard !claims.sub.value.isEmpty else { throw EddyError(.unauthorized, "the token has no subject (sub)") }
        return Principal(name: claims.sub.value, grants: claims.grants)
    }

}

/// A key that checks tokens: its algorithm (a token must name the same one) and a collection holding it alone.
struct VerificationKey: Sendable {
    let alg: String
    let collection: JWTKeyCollection

    /// Checks `token` with the key its header names (`kid`), which must use the algorithm its header says
    /// (`alg`), and returns its claims, verified (`Claims.verify`: expiry and the like).
    /// - Throws: ``EddyError/Code/unauthorized`` saying what is wrong with the token.
    static func verify<Claims: JWTPayload>(_ token: String, keys: [String: VerificationKey], as: Claims.Type)
        async throws(EddyError) -> Claims
    {
        let header = try header(of: token)
        guard let kid = header.kid, let key = keys[kid] else {
            throw EddyError(.unauthorized, "the token's key (kid) is not one this server knows")
        }
        guard header.alg == key.alg else {
            throw EddyError(.unauthorized, "the token's algorithm is not its key's (\(key.alg))")
        }
        do {
            return try await key.collection.verify(token, as: Claims.self)
        } catch let error as JWTError {
            throw EddyError(.unauthorized, "the token is not valid: \(error.reason ?? "\(error.errorType)")")
        } catch {
            throw EddyError(.unauthorized, "the token is not valid")
        }
    }

    /// The keys of a JSON Web Key Set (what a Kubernetes cluster publishes at `/openid/v1/jwks`): RSA keys
    /// (RS256) and P-256 keys (ES256), each by its `kid`; a key without `alg` gets its type's.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming `source` and the key that cannot be used.
    static func keys(of jwks: JWKS, source: String) async throws(EddyError) -> [String: VerificationKey] {
        guard !jwks.keys.isEmpty else { throw EddyError(.invalidArgument, "\(source): the key set has no keys") }
        var keys: [String: VerificationKey] = [:]
        for jwk in jwks.keys {
            guard let kid = jwk.keyIdentifier?.string, !kid.isEmpty else {
                throw EddyError(.invalidArgument, "\(source): a key of the set has no kid")
            }
            guard keys[kid] == nil else { throw EddyError(.invalidArgument, "\(source): kid '\(kid)' repeats") }
            let alg: String
            switch (jwk.keyType, jwk.algorithm) {
            case (.rsa, nil), (.rsa, .rs256?): alg = "RS256"
            case (.ecdsa, nil), (.ecdsa, .es256?): alg = "ES256"
            default:
                throw EddyError(
                    .invalidArgument,
                    "\(source): key '\(kid)' is \(jwk.keyType.rawValue) \(jwk.algorithm?.rawValue ?? ""); use RS256 or ES256"
                )
            }
            let collection = JWTKeyCollection()
            do {
                var key = jwk
                key.algorithm = alg == "RS256" ? .rs256 : .es256
                try await collection.add(jwk: key)
            } catch {
                throw EddyError(.invalidArgument, "\(source): key '\(kid)' cannot be used: \(error)")
            }
            keys[kid] = VerificationKey(alg: alg, collection: collection)
        }
        return keys
    }

    /// The token's header, read without checking anything (to pick the key).
    static func header(of token: String) throws(EddyError) -> JWTAuthenticator.Header {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = base64URLDecoded(parts[0]),
            let header = try? JSONDecoder().decode(JWTAuthenticator.Header.self, from: data)
        else {
            throw EddyError(.unauthorized, "the token is not a JWT (header.payload.signature)")
        }
        return header
    }

    static func base64URLDecoded(_ text: Substring) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
